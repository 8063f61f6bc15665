"""Speed against TF-Keras and PyTorch on this machine (issues 4 and 11); see docs/benchmarks.md.

``run`` is the command; ``workloads`` what is measured and how (no JAX: the peers import it);
``peers`` the frameworks' environments and processes; ``run_flaxvision``, ``run_keras`` and
``run_torch`` measure one framework each; ``profile`` shows where our compiled step spends its time.
"""
