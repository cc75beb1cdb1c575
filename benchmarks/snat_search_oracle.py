"""A minimal simulation of the SNAT port search alone, to study its clustering (issue 3, check b).

    python benchmarks/snat_search_oracle.py PORTS LOAD fixed|exp

A ring of PORTS ports, Poisson arrivals at LOAD x PORTS per holding time, each flow holding its
port a fixed time (``fixed``, like TIME_WAIT) or an exponential one (``exp``) of the same mean; a
search takes the first free port of runs of 128/64/32/16/8 from random u16 starts. Prints the
failed fraction after a warm-up, the mean occupancy, G(L) = P(L consecutive ports all held) from
snapshots, and the product of G over the five runs (the failure probability if the runs were
independent given the occupancy). Independent of lbsim's code.
"""
import heapq, random, sys, numpy as np
def sim(R, load, hold, exp_hold, warm_h=8, span_h=6, seed=1, runs=(128,64,32,16,8)):
    rnd = random.Random(seed); lam = load*R/hold
    busy = bytearray(R); ends=[]; t=0.0; fails=seen=0
    snaps=[]; next_snap = warm_h*hold
    while t < (warm_h+span_h)*hold:
        t += rnd.expovariate(lam)
        while ends and ends[0][0] <= t:
            busy[heapq.heappop(ends)[1]] = 0
        if t >= next_snap:
            snaps.append(np.frombuffer(bytes(busy), np.uint8).copy()); next_snap += hold/2
        ch=-1
        for L in runs:
            off = rnd.getrandbits(16)
            for k in range(L):
                p = ((off+k) & 0xFFFF) % R
                if not busy[p]: ch=p; break
            if ch>=0: break
        if t > warm_h*hold:
            seen+=1; fails += ch<0
        if ch>=0:
            busy[ch]=1
            heapq.heappush(ends,(t+(rnd.expovariate(1/hold) if exp_hold else hold), ch))
    return fails/seen, snaps
def G(snap, L):
    # fraction of windows of L consecutive (cyclic) all busy
    b = np.concatenate([snap, snap[:L]]).astype(np.int64)
    c = np.concatenate([[0], np.cumsum(b)])
    R = snap.size
    s = c[L:L+R] - c[:R]
    return (s == L).mean()
if __name__ == "__main__":
    R=int(sys.argv[1]); load=float(sys.argv[2]); exp_hold = sys.argv[3]=="exp"
    pf, snaps = sim(R, load, 1.0, exp_hold)
    al = np.mean([s.mean() for s in snaps])
    Gs = {L: np.mean([G(s,L) for s in snaps]) for L in (8,16,32,64,128)}
    print(R, load, sys.argv[3], "pfail", pf, "alpha", round(al,4), {L: round(v,4) for L,v in Gs.items()}, "prodG", np.prod(list(Gs.values())))
