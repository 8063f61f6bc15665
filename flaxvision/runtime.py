"""Process-wide JAX setup for every stage: the persistent compilation cache, and multi-host runs.

Each DVC stage is a new process, so without the cache every stage recompiles what the one before
it compiled: building a backbone alone compiles one initializer per weight shape (DenseNet121:
21 s, 2.3 s from this cache), and every train or predict step is compiled again per run.
"""

import os

import jax

from flaxvision.paths import cache_dir


def setup_jax():
    """Keep every compiled XLA program in ``<cache dir>/xla`` ($FLAXVISION_CACHE), however small;
    with FLAXVISION_DISTRIBUTED=1, join the other hosts (jax.distributed.initialize, which reads the
    coordinator, process count and id from the cluster or the JAX_* environment variables)."""
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if os.environ.get("FLAXVISION_DISTRIBUTED") == "1":
        jax.distributed.initialize()
