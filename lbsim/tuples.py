"""Connection tuples packed into 64-bit keys, and the addresses of clients, nodes and pods.

A node's conntrack table holds every entry under two tuples (kernel-facts 1.5): the ORIGINAL one
(client IP:port -> node IP:NodePort) and the REPLY one (pod IP:port -> NAT IP:port). Within one
simulated Service the fixed parts (NodePort, pod port, protocol) are implied, so a tuple packs into
an int64 key together with the node whose table holds it:

* original: ``1 << 62 | node << 40 | client << 16 | client_port``
* reply:    ``node << 36 | pod << 16 | nat_port`` (the NAT IP is the node's own IP)
* reply without SNAT: ``1 << 61 | pod << 40 | client << 16 | client_port``; the node is implied
  (Local: the pod is on it; pod clients: the client is on it)

Hence the limits ``nodes < 2**14``, ``pods < 2**20``, ``clients < 2**24`` enforced by the config.
"""

from __future__ import annotations

import ipaddress

import numpy as np

__all__ = ["orig_key", "reply_key", "reply_key_nosnat", "client_ip", "node_ip", "pod_ip", "ip_str"]

CLIENT_BASE = int(ipaddress.IPv4Address("11.0.0.0"))
NODE_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
POD_BASE = int(ipaddress.IPv4Address("10.128.0.0"))
#: the source address a masqueraded packet carries: node 0's IP (node_ip)
NODE_IP_BASE = NODE_BASE + 1

# The key functions are plain integer arithmetic on Python ints, int64 numpy arrays or numba
# int64s, so that the compiled engine compiles these very functions (one packing for every engine).


def orig_key(node, client, client_port):
    """Key of the ORIGINAL tuple client:port -> node:NodePort in ``node``'s table."""
    return (1 << 62) | (node << 40) | (client << 16) | client_port


def reply_key(node, pod, nat_port):
    """Key of the REPLY tuple pod:port -> node:nat_port in ``node``'s table."""
    return (node << 36) | (pod << 16) | nat_port


def reply_key_nosnat(pod, client, client_port):
    """Key of the REPLY tuple pod:port -> client:port of a flow that was not masqueraded."""
    return (1 << 61) | (pod << 40) | (client << 16) | client_port


def client_ip(client):
    """IPv4 address (as an integer) of client number ``client``: 11.0.0.0 + client."""
    return np.asarray(client, np.int64) + CLIENT_BASE


def node_ip(node):
    """IPv4 address of node ``node``: 10.0.0.1 + node."""
    return np.asarray(node, np.int64) + NODE_IP_BASE


def pod_ip(pod):
    """IPv4 address of pod ``pod``: 10.128.0.1 + pod."""
    return np.asarray(pod, np.int64) + POD_BASE + 1


def ip_str(addr: int) -> str:
    """Dotted-quad form of an integer IPv4 address."""
    return str(ipaddress.IPv4Address(int(addr)))
