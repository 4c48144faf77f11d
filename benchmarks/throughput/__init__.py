"""The pieces of benchmarks/gpu_throughput.py, one module per concern (see its docstring)."""
