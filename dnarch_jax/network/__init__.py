"""The network: a CCNN whose kernels, widths, resolutions and depth are cropped to an ``Arch``.

``kernelnets`` (MAGNet, SIREN), ``conv`` with ``conv_routes`` and ``conv_flops`` (depthwise
convolution, which route runs, what each costs XLA), ``native`` and ``csrc/`` (the C++ CPU kernels
behind the "native" routes), ``layers`` and ``model`` (the Linen modules that own parameters at
their maximal shapes and compute on a crop).
"""
