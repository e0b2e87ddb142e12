"""The method: what DNArch learns and what it pays (METHOD.md §2-7), as pure functions.

``masks`` (the mask functions and their extents) and ``mask_kinds`` (each kind of mask in one
home: its parameter, application, crop, soft size and box); ``grids`` (where a continuous kernel is
sampled, at any resolution and crop), ``spectral`` (Fourier resampling), ``channels`` (static
channel selections); ``arch_params`` (which parameters are the architecture's), ``arch`` (the static
``Arch`` a step compiles for), ``crops`` (mask parameters to crop sizes and back),
``search_space`` (where each parameter may go and how fast); ``sizes`` and ``cost`` (the sizes the
cost model prices, their FLOPs and parameters) and ``budget`` (its value, feasibility, projection).
From the network it reads only the convolution routes (``network.conv_routes``, ``conv_flops``):
the cost prices each layer's route as XLA counts it.
"""
