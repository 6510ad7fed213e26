"""`make bench-cluster`: the claim path against one Redis and against a 3-master Redis Cluster,
in the same run.

Two sets of scratch servers are started on free loopback ports in a temporary directory (never
the shared Redis on 6379): one redis-server, and three cluster-enabled ones joined by
`redis-cli --cluster create` with no replicas. Each run gets fresh stores (its own database,
quanyi_bench_cluster, created and dropped here; the scratch servers flushed), 16 live
campaigns, one in each of 16 virtual shards, `quanyi serve` (1 process, then 2) and
`quanyi worker ledger`, and wrk replaying unique signed claims round-robin over the campaigns.
Three targets:

  1 master, 1 shard     a single Redis as the service runs on it by default
  1 master, 16 shards   the same Redis with the cluster's key layout: the cost of sharding
                        (the request-id route, one outbox per shard for the ledger to read)
  3 masters, 16 shards  the cluster client against the cluster: the cost of the cluster path

Each prints claims/s, p50/p99, Redis CPU per claim (INFO cpu, used_cpu_sys + used_cpu_user
summed over the masters, from the start of the measured window until the ledger caught up)
and API CPU per claim, then the ratios against one master. Then the same claims without HTTP
(ClaimService in this process) for each target. After every run the ledger holds one row per
grant Redis counted and no campaign went over its stock, or the run fails.

Then one hot campaign on the 3 masters (with the most API processes): every claim to it,
each from a customer of its own (one per customer, 10M stock, never sold out), published
whole ("hot, 1 part") and split into 3 stock parts on 3 masters ("hot, 3 parts"). Each prints
claims/s, p99 and the busiest master's share of the Redis CPU over the run: about 1 when one
master holds the campaign, about a third when the parts spread it. The invariants then cover
the parts: their granted add up to the ledger's rows, and none granted more than its stock.

On a machine with few cores the three masters share them with the API, the worker and wrk, so
the ratio shows what the cluster path costs, not how it scales: the capacity model reads Redis
CPU per claim, a core's worth of which a master has to itself in production.

    python -m loadtests.bench_cluster [--duration S] [--quick] [--api 1,2] [--micro S] [--no-hot]

The package: `stores` sets up the stores and campaigns and reads them back, `runs` runs the
targets, `report` prints them; loadtests/scratch_redis.py starts the servers.
"""
