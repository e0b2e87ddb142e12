"""The run: training, resuming and evaluating a method on a task.

``loop`` (the run loop both methods share), ``methods`` (the registry the command line looks a
run's method up in), ``experiment`` (a run's pieces from its config), ``train`` and ``steps``
(DNArch's trainer and its jitted steps), ``optim`` (weights and architecture optimised apart),
``checkpoint``, ``restore`` and ``workdir`` (saving, reading back, guarding a run's directory),
``sharding`` (data parallelism), ``hostmem`` (host memory around XLA:CPU), ``evaluate``.
This ``__init__`` imports nothing: ``dnarch`` loads ``hostmem`` before JAX.
"""
