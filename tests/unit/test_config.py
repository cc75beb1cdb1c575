import pytest

from lbsim import Scenario
from lbsim.durations import Exponential, LogNormal


def test_defaults_round_trip_dict_and_toml():
    s = Scenario()
    assert Scenario.from_dict(s.to_dict()) == s
    assert Scenario.from_toml_string(s.to_toml()) == s


def test_round_trip_with_every_kind_of_value(tmp_path):
    s = Scenario().replace(**{
        "path": "direct", "seed": 7, "workload.protocol": "udp", "workload.hold_s": {"dist": "exponential", "mean": 0.5},
        "pod.service_s": {"dist": "lognormal", "mean": 0.2, "sigma": 1.0}, "cluster.placement": [3, 0, 1],
        "cluster.nodes": 3, "cluster.pods": 4, "nat.port_range": [10000, 10063],
        "kube_proxy.external_traffic_policy": "Local", "nat.kernel": "5.x",
        "lb.algorithm": "maglev", "lb.weights": "workers", "lb.persistence_s": 30.0,
        "kube_proxy.mode": "ipvs", "kube_proxy.ipvs_scheduler": "sh",
        "kube_proxy.session_affinity": "ClientIP", "pod.workers": [1, 2, 3, 4]})
    assert isinstance(s.workload.hold_s, Exponential)
    assert isinstance(s.pod.service_s, LogNormal)
    p = tmp_path / "s.toml"
    p.write_text(s.to_toml())
    assert Scenario.from_toml(p) == s
    assert Scenario.from_dict(s.to_dict()) == s


def test_issue_toml_example_parses():
    text = """
path = "nodeport"
seed = 1
[workload]
protocol = "tcp"
rate_per_s = 1000.0
flows = 100000
clients = 4096
client_port_range = [32768, 60999]
hold_s = 0.0
syn_retries = 6
[lb]
instances = 1
algorithm = "rr"
[cluster]
nodes = 10
cpus_per_node = 2
pods = 100
placement = "spread"
[pod]
workers = 4
service_s = 0.2
[kube_proxy]
mode = "iptables"
external_traffic_policy = "Cluster"
[nat]
random_fully = false
[conntrack]
max = 262144
time_wait_s = 120.0
"""
    assert Scenario.from_toml_string(text) == Scenario()


BAD = [
    ("[workload]\nrate_per_s = -1.0", "workload.rate_per_s"),
    ("[workload]\nrate_per_s = 0", "workload.rate_per_s"),
    ("[workload]\nflows = 0", "workload.flows"),
    ("[workload]\nprotocol = 'sctp'", "workload.protocol"),
    ("[workload]\nclient_port_range = [60000, 50000]", "workload.client_port_range"),
    ("[workload]\nclient_port_range = [0, 10]", "workload.client_port_range"),
    ("[workload]\nhold_s = -2", "workload.hold_s"),
    ("[workload]\nsyn_retries = -1", "workload.syn_retries"),
    ("[cluster]\npods = 0", "cluster.pods"),
    ("[cluster]\nnodes = 0", "cluster.nodes"),
    ("[cluster]\ncpus_per_node = 0", "cluster.cpus_per_node"),
    ("[cluster]\nplacement = 'clumped'", "cluster.placement"),
    ("[cluster]\nplacement = [1, 2]", "cluster.placement"),
    ("[pod]\nworkers = 0", "pod.workers"),
    ("[pod]\nservice_s = { dist = 'weibull', mean = 1 }", "pod.service_s.dist"),
    ("[pod]\nservice_s = { dist = 'exponential', mean = -1 }", "pod.service_s.mean"),
    ("[nat]\nport_range = [10063, 10000]", "nat.port_range"),
    ("[nat]\nport_range = [0, 0]", "nat.port_range"),
    ("[nat]\nkernel = '3.x'", "nat.kernel"),
    ("[nat]\nrandom_fully = 'yes'", "nat.random_fully"),
    ("[lb]\nalgorithm = 'fastest'", "lb.algorithm"),
    ("[lb]\ninstances = 0", "lb.instances"),
    ("[lb]\nweights = 'heavy'", "lb.weights"),
    ("[lb]\nmaglev_table_size = 65536", "lb.maglev_table_size"),
    ("[lb]\npersistence_s = -1", "lb.persistence_s"),
    ("[lb]\nhealth_check = 1", "lb.health_check"),
    ("[kube_proxy]\nmode = 'userspace'", "kube_proxy.mode"),
    ("[kube_proxy]\nipvs_scheduler = 'sed'", "kube_proxy.ipvs_scheduler"),
    ("[kube_proxy]\nsession_affinity_timeout_s = 90000", "kube_proxy.session_affinity_timeout_s"),
    ("[kube_proxy]\ncilium_maglev_table_size = 16384", "kube_proxy.cilium_maglev_table_size"),
    ("[cluster]\npods = 3\n[pod]\nworkers = [1, 2]", "pod.workers"),
    ("[pod]\nworkers = [0]", "pod.workers"),
    ("[kube_proxy]\nexternal_traffic_policy = 'cluster'", "kube_proxy.external_traffic_policy"),
    ("[conntrack]\ntime_wait_s = -1", "conntrack.time_wait_s"),
    ("[conntrack]\nmax = 0", "conntrack.max"),
    ("[conntrack]\ngc_interval_s = 0", "conntrack.gc_interval_s"),
    ("[network]\nclient_to_lb_s = -0.1", "network.client_to_lb_s"),
    ("path = 'hostport'", "path"),
    ("seed = -3", "seed"),
    ("[workload]\nrate = 3", "workload.rate"),
    ("colour = 'red'", "colour"),
    ("[workload\nflows = 3", "malformed TOML"),
]


@pytest.mark.parametrize("text,field", BAD, ids=[b[1] for b in BAD])
def test_bad_input_names_the_field(text, field):
    with pytest.raises(ValueError) as e:
        Scenario.from_toml_string(text)
    assert field in str(e.value)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match="valid keys are .*rate_per_s"):
        Scenario.from_toml_string("[workload]\nrate = 3")


def test_constructor_validates_too():
    from lbsim import ClusterConfig
    with pytest.raises(ValueError, match="cluster.pods"):
        ClusterConfig(pods=0)
