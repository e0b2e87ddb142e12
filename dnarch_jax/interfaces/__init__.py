"""The interfaces: how people drive a run and read what it found.

``cli`` (the ``dnarch`` command), ``variants`` (the variants every experiment file offers),
``export`` and ``exported`` (a discovered network as a plain fixed-shape Linen module and a
portable ``jax.export`` program), ``report`` (records and plots, written by the run loop),
``events`` (TensorBoard), ``summary`` (the architecture layer by layer). Data input is its own
package, ``dnarch_jax.data``; DNAL, the second method, is ``dnarch_jax.dnal``.
"""
