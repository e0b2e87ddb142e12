// Depthwise convolution on the CPU as XLA FFI handlers: dnarch_jax.network.conv's "native" route.
//
// XLA:CPU lowers a grouped convolution to a dense one C times larger, and the JAX-level
// shift-and-add keeps one kernel tap per register but sweeps the whole row once per tap. These
// kernels keep a tile of outputs in registers (8 positions x 8 channels, one AVX2 register per
// position) while the taps stream past it: each tap costs one kernel load, 8 input loads (from
// L1) and 8 fused multiply-adds, and the row is read from memory once.
//
// Layout: x, y, g are [B, H, W, C] (H = 1 for 1D), channels last, f32; the kernel is
// [TH, TW, C]. Both handlers compute a "same"-size cross-correlation with the input zero-padded
// by (lo_h, lo_w) before and TH-1-lo_h, TW-1-lo_w after:
//   dnarch_dwconv_fwd:  y[b,h,w,c]   = sum_{i,j} k[i,j,c] x[b, h+i-lo_h, w+j-lo_w, c]
//   dnarch_dwconv_dk:   dk[i,j,c]    = sum_{b,h,w} g[b,h,w,c] x[b, h+i-lo_h, w+j-lo_w, c]
// The input gradient is the forward op with the flipped kernel and the pads swapped (conv.py).
//
// Each task copies its slice of x into a zero-padded, channel-blocked scratch [NB][Hp][Wp][8]
// (so the inner loops have no bounds checks and walk memory contiguously) and runs on XLA's
// intra-op thread pool; the calling thread works too, so a busy pool cannot deadlock it.
//
// The kernels are compiled twice, for AVX2 + FMA and as portable code; __builtin_cpu_supports
// picks one on the first call.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace dnarch {
namespace {

constexpr int64_t kLanes = 8;  // f32 lanes of one AVX2 register: the channel block.

struct Dims {
  int64_t B, H, W, C, TH, TW, lo_h, lo_w;
  int64_t NB() const { return (C + kLanes - 1) / kLanes; }
};

// Runs fn(0..n-1) on the pool's threads and the caller's. Tasks are claimed from a shared
// counter, so tasks the pool starts after the work is gone return at once; the caller waits
// only for tasks another thread has claimed.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const std::function<void(int64_t)>& fn) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto state = std::make_shared<State>();
  auto work = [state, n, &fn]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < n;) {
      fn(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t t = 0; t < helpers; ++t) {
    // The copy holds `state` alive; it touches `fn` only while work is left, i.e. while the
    // caller is still waiting below.
    pool.Schedule([state, n, work]() {
      if (state->next.load() < n) work();
    });
  }
  work();
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

// A per-thread scratch buffer, grown as needed and reused across calls.
float* Scratch(int slot, size_t floats) {
  thread_local std::vector<float> buffers[2];
  auto& buf = buffers[slot];
  if (buf.size() < floats) buf.resize(floats);
  return buf.data();
}

// Copies channel blocks [nb0, nb1) of one example src[H][W][C] into dst[nb][Hp][Wp][8] at
// offset (oh, ow), zeroing the rest (padding and channels past C).
void CopyBlocked(const float* src, const Dims& d, int64_t nb0, int64_t nb1, int64_t Hp,
                 int64_t Wp, int64_t oh, int64_t ow, float* dst) {
  const int64_t plane = Hp * Wp * kLanes, row = Wp * kLanes;
  // Full channel blocks are fixed-size copies (one vector move each); a last, short block is
  // zeroed whole first. Of the full blocks only the padding is zeroed.
  const int64_t full = std::min(nb1, d.C / kLanes), tail = d.C - full * kLanes;
  for (int64_t nb = nb0; nb < nb1; ++nb) {
    float* p = dst + (nb - nb0) * plane;
    if (nb >= full) {
      std::memset(p, 0, sizeof(float) * plane);
      continue;
    }
    std::memset(p, 0, sizeof(float) * oh * row);
    std::memset(p + (oh + d.H) * row, 0, sizeof(float) * (Hp - oh - d.H) * row);
    for (int64_t h = oh; h < oh + d.H; ++h) {
      std::memset(p + h * row, 0, sizeof(float) * ow * kLanes);
      std::memset(p + h * row + (ow + d.W) * kLanes, 0, sizeof(float) * (Wp - ow - d.W) * kLanes);
    }
  }
  for (int64_t h = 0; h < d.H; ++h) {
    for (int64_t w = 0; w < d.W; ++w) {
      const float* s = src + (h * d.W + w) * d.C;
      float* o = dst + ((h + oh) * Wp + (w + ow)) * kLanes - nb0 * plane;
      for (int64_t nb = nb0; nb < full; ++nb) {
        std::memcpy(o + nb * plane, s + nb * kLanes, sizeof(float) * kLanes);
      }
      if (full < nb1) std::memcpy(o + full * plane, s + full * kLanes, sizeof(float) * tail);
    }
  }
}

// Twiddles and bit reversal of a power-of-two FFT of size M (fft_conv_kernels.inc).
struct FftPlan {
  int64_t M, log2 = 0;
  std::vector<float> wr, wi;  // e^{-2 pi i t / M}, t < M
  std::vector<int64_t> rev;   // bit reversal of [0, M)
  explicit FftPlan(int64_t m) : M(m), wr(m), wi(m), rev(m) {
    for (int64_t t = 0; t < m; ++t) {
      const double angle = -2.0 * M_PI * static_cast<double>(t) / static_cast<double>(m);
      wr[t] = static_cast<float>(std::cos(angle));
      wi[t] = static_cast<float>(std::sin(angle));
    }
    while ((int64_t{1} << log2) < m) ++log2;
    for (int64_t i = 0; i < m; ++i) {
      int64_t r = 0;
      for (int b = 0; b < log2; ++b) r |= ((i >> b) & 1) << (log2 - 1 - b);
      rev[i] = r;
    }
  }
};

// The transform size of a 1D FFT convolution: a power of two past the signal and the kernel's
// longer side, so the circular product wraps onto no output. A kernel longer than that has lags
// that share a slot mod M, but then both lie out of reach of every output and of the input, so
// they add nothing, as in the exact sum.
int64_t FftSize(const Dims& d) {
  const int64_t need = d.W + std::max(d.lo_w, d.TW - 1 - d.lo_w);
  int64_t m = 2;
  while (m < need) m <<= 1;
  return m;
}

#define DNARCH_KERNELS_NAMESPACE portable
#include "depthwise_conv_kernels.inc"
#include "fft_conv_kernels.inc"
#undef DNARCH_KERNELS_NAMESPACE

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define DNARCH_KERNELS_NAMESPACE avx2
#include "depthwise_conv_kernels.inc"
#include "fft_conv_kernels.inc"
#undef DNARCH_KERNELS_NAMESPACE
#pragma GCC pop_options
bool UseAvx2() {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2;
}
#else
bool UseAvx2() { return false; }
namespace avx2 = portable;
#endif

ffi::Error ReadDims(const ffi::Buffer<ffi::F32>& x, const ffi::Buffer<ffi::F32>& k,
                    int64_t lo_h, int64_t lo_w, bool fft, Dims* d) {
  auto xd = x.dimensions();
  auto kd = k.dimensions();
  if (xd.size() == 3 && kd.size() == 2) {
    *d = {xd[0], 1, xd[1], xd[2], 1, kd[0], 0, lo_w};
  } else if (xd.size() == 4 && kd.size() == 3 && !fft) {
    *d = {xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], lo_h, lo_w};
  } else {
    return ffi::Error::InvalidArgument(
        fft ? "dnarch_dwconv_fft: x must be [B, W, C], k [TW, C] (1D only)"
            : "dnarch_dwconv: x must be [B, (H,) W, C], k [(TH,) TW, C]");
  }
  if (kd[kd.size() - 1] != d->C) {
    return ffi::Error::InvalidArgument("dnarch_dwconv: kernel and input channels differ");
  }
  if (d->lo_h < 0 || d->lo_h >= d->TH || d->lo_w < 0 || d->lo_w >= d->TW) {
    return ffi::Error::InvalidArgument("dnarch_dwconv: pad must lie in [0, taps)");
  }
  return ffi::Error::Success();
}

// The handlers: y from (x, k), and dk from (x, g); kFft picks the 1D FFT kernels over the
// direct ones, UseAvx2 the instruction set.
template <bool kFft>
ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                   ffi::ResultBuffer<ffi::F32> y, int64_t lo_h, int64_t lo_w) {
  Dims d;
  if (auto e = ReadDims(x, k, lo_h, lo_w, kFft, &d); e.failure()) return e;
  if constexpr (kFft) {
    const FftPlan plan(FftSize(d));
    (UseAvx2() ? avx2::FftForward : portable::FftForward)(pool, d, plan, x.typed_data(),
                                                          k.typed_data(), y->typed_data());
  } else {
    (UseAvx2() ? avx2::Forward : portable::Forward)(pool, d, x.typed_data(), k.typed_data(),
                                                    y->typed_data());
  }
  return ffi::Error::Success();
}

template <bool kFft>
ffi::Error KernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                      ffi::ResultBuffer<ffi::F32> dk, int64_t lo_h, int64_t lo_w) {
  Dims d;
  if (auto e = ReadDims(x, *dk, lo_h, lo_w, kFft, &d); e.failure()) return e;
  if (!std::equal(g.dimensions().begin(), g.dimensions().end(), x.dimensions().begin(),
                  x.dimensions().end())) {
    return ffi::Error::InvalidArgument("dnarch_dwconv_dk: x and g shapes differ");
  }
  if constexpr (kFft) {
    const FftPlan plan(FftSize(d));
    (UseAvx2() ? avx2::FftKernelGrad : portable::FftKernelGrad)(pool, d, plan, x.typed_data(),
                                                                g.typed_data(), dk->typed_data());
  } else {
    (UseAvx2() ? avx2::KernelGrad : portable::KernelGrad)(pool, d, x.typed_data(),
                                                          g.typed_data(), dk->typed_data());
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace dnarch

// Every handler has the same signature: (x, kernel or g) -> result, attributes lo_h, lo_w.
#define DNARCH_DEFINE_HANDLER(symbol, fn)                    \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(symbol, fn,                  \
                                ffi::Ffi::Bind()             \
                                    .Ctx<ffi::ThreadPool>()  \
                                    .Arg<ffi::Buffer<ffi::F32>>() \
                                    .Arg<ffi::Buffer<ffi::F32>>() \
                                    .Ret<ffi::Buffer<ffi::F32>>() \
                                    .Attr<int64_t>("lo_h")   \
                                    .Attr<int64_t>("lo_w"));

DNARCH_DEFINE_HANDLER(DnarchDwconvFwd, dnarch::Forward<false>)
DNARCH_DEFINE_HANDLER(DnarchDwconvDk, dnarch::KernelGrad<false>)
DNARCH_DEFINE_HANDLER(DnarchDwconvFftFwd, dnarch::Forward<true>)
DNARCH_DEFINE_HANDLER(DnarchDwconvFftDk, dnarch::KernelGrad<true>)
