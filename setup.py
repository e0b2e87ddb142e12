"""Builds dnarch_jax's CPU kernels (``dnarch_jax/network/csrc``, an XLA FFI library) into the package.

Everything else is in pyproject.toml. The extension is optional: without a C++ compiler the
install still succeeds and the "native" convolution route runs as "shift" instead
(``dnarch_jax/network/native.py``). The XLA FFI headers come from jaxlib, a build requirement.
"""

import os

import setuptools
from setuptools.command.build_ext import build_ext


class BuildWithFfiHeaders(build_ext):
  def build_extensions(self):
    import jaxlib  # the build environment's; its headers are XLA's stable C API for FFI calls

    include = os.path.join(os.path.dirname(jaxlib.__file__), "include")
    for ext in self.extensions:
      ext.include_dirs.append(include)
    super().build_extensions()


native_conv = setuptools.Extension(
  "dnarch_jax.network._native_conv",
  sources=["dnarch_jax/network/csrc/depthwise_conv.cc"],
  depends=["dnarch_jax/network/csrc/depthwise_conv_kernels.inc", "dnarch_jax/network/csrc/fft_conv_kernels.inc"],
  language="c++",
  extra_compile_args=["-std=c++17", "-O3", "-ffp-contract=fast", "-Wno-psabi"],
  optional=True,
)

setuptools.setup(ext_modules=[native_conv], cmdclass={"build_ext": BuildWithFfiHeaders})
