"""Everything QERNEL keeps on disk, one module per kind.

* ``store``: zarr access shared by every store (create, append rows, truncate,
  repair, consolidate, write locks, provenance);
* ``train``: the schema of ``train.zarr`` (one row per optimisation step);
* ``samples``: the sample store (walker positions and energies per record);
* ``observables``: the observables store and its one record per depth;
* ``checkpoint``: atomic checkpoints of a pytree without pickle;
* ``run_dir``: the run directory of ``qernel train`` and its checks;
* ``atomic``: durable replacement of a file.

``store``, ``samples``, ``train``, ``checkpoint``, ``run_dir`` and ``atomic``
import no JAX, so the command line refuses a bad store, checkpoint or run
directory before it loads the numerics. The layouts are documented in
docs/store-format.md.
"""
