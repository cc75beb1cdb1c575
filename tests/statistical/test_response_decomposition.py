"""The response time's parts: the data path's own delay against its closed form, the pod's
queueing against Pollaczek-Khinchine (M/D/1), and their sum against the response time."""

import math

import numpy as np
import pytest

import lbsim

NS = 1e9


def test_datapath_delay_is_packet_time_plus_four_hops_when_nothing_queues():
    """TCP: the SYN crosses the node's CPU once (packet_time_s) and, to a pod on another node,
    the second hop four times (SYN, SYN-ACK, the request, the response). A slow rate and 64 CPUs
    per node: no flow waits for a CPU."""
    sc = lbsim.Scenario().replace(**{
        "workload.flows": 2000, "workload.rate_per_s": 5.0, "cluster.nodes": 4, "cluster.pods": 8,
        "cluster.cpus_per_node": 64, "pod.workers": 64, "conntrack.time_wait_s": 1.0})
    c = lbsim.compare(sc)
    f = c.nodeport.flows
    pkt, hop = sc.cluster.packet_time_s.value, sc.network.node_to_pod_s
    want = np.where(f.second_hop, pkt + 4 * hop, pkt)
    assert f.second_hop.any() and (~f.second_hop).any()
    assert np.allclose(f.datapath_delay_s, want, rtol=0, atol=2e-9)
    assert (f.pod_wait_s == 0).all()
    assert (c.direct.flows.datapath_delay_s == 0).all()
    # the parts add up: response = the client <-> LB <-> backend legs + delay + wait + service
    legs = 4 * (sc.network.client_to_lb_s + sc.network.lb_to_backend_s)
    service = sc.pod.service_s.value
    assert np.allclose(f.response_time_s, legs + f.datapath_delay_s + f.pod_wait_s + service,
                       rtol=0, atol=4e-9)


@pytest.mark.slow
def test_pod_wait_matches_md1():
    """One pod, one worker, Poisson arrivals at utilisation 0.5, fixed service S: the mean wait
    is rho S / (2 (1 - rho)) (Pollaczek-Khinchine). Waits are correlated, so the standard error
    comes from 40 batch means; tolerance 4 of them."""
    rho, S = 0.5, 0.01
    sc = lbsim.Scenario().replace(**{
        "path": "direct", "workload.flows": 400_000, "workload.rate_per_s": rho / S,
        "cluster.nodes": 1, "cluster.pods": 1, "pod.workers": 1, "pod.service_s": S,
        "records": "full"})
    w = lbsim.run(sc).flows.pod_wait_s.to_numpy()[1000:]       # past the empty start
    batches = w[: w.size // 40 * 40].reshape(40, -1).mean(axis=1)
    se = batches.std(ddof=1) / math.sqrt(batches.size)
    want = rho * S / (2 * (1 - rho))
    assert abs(w.mean() - want) < 4 * se, (w.mean(), want, se)
