"""Real ZooKeeper, etcd and HAProxy processes on loopback, for tests, the demo and benchmarks."""
