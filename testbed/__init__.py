"""The harness: real ZooKeeper, etcd, HAProxy and dockerd on loopback, the toy HTTP backend, the
project's images and `make demo`. Used by tests, the demo, benchmarks and the compose demo; not
part of the wheel (`pip install .` installs nerve, synapse and smartstack only)."""
