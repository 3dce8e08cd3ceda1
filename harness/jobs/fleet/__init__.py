"""Past one machine: the gate and the soak over several hosts (pytest-xdist over execnet/ssh),
each host with its own runtime cache and homes, and one report written by the controller."""
