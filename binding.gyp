# CPU-only fallback build, used by scripts/build-addon.js when cmake is not installed (or PAPO_BUILD=gyp).
# The same sources as CMakeLists.txt minus CUDA; each instruction set's row kernels, and the vocabulary merge
# (no fused multiply-adds), are a static library of their own because gyp sets compiler flags per target, not per
# file.
{
  "variables": {
    "papo_x86": "<!(node -p \"['x64','ia32'].includes(process.arch) ? 1 : 0\")",
    "papo_version": "<!(node -p \"require('./package.json').version\")"
  },
  "target_defaults": {
    "cflags_cc!": ["-fno-exceptions"],
    "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-Wno-psabi"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
    "xcode_settings": { "GCC_ENABLE_CPP_EXCEPTIONS": "YES", "CLANG_CXX_LANGUAGE_STANDARD": "c++17" }
  },
  "targets": [
    {
      "target_name": "papo_kernels",
      "sources": [
        "native/core/error.cpp", "native/core/row_status.cpp", "native/core/token_weights.cpp",
        "native/core/reduce.cpp", "native/core/sequence_phase.cpp", "native/core/thread_pool.cpp",
        "native/cpu/dispatch.cpp", "native/cpu/kernels_baseline.cpp", "native/cpu/papo_cpu.cpp",
        "native/napi/args.cpp", "native/napi/js_errors.cpp", "native/napi/device_tensors.cpp", "native/napi/enums.cpp",
        "native/napi/host_buffers.cpp",
        "native/napi/addon.cpp", "native/cuda/cuda_stub.cpp"
      ],
      "defines": ["PAPO_VERSION=\"<(papo_version)\"", "PAPO_CUDA_SKIP_REASON=\"built by node-gyp (CPU only)\""],
      "dependencies": ["papo_vocab_merge"],
      "conditions": [
        ["OS!='mac'", { "ldflags": ["-Wl,-z,nodelete"] }],
        ["papo_x86==1", {
          "defines": ["PAPO_HAVE_X86_KERNELS"],
          "dependencies": ["papo_kernels_avx2", "papo_kernels_avx512"]
        }]
      ]
    },
    {
      "target_name": "papo_vocab_merge",
      "type": "static_library",
      "sources": ["native/core/vocab_merge.cpp"],
      "cflags": ["-ffp-contract=off", "-fPIC"],
      "xcode_settings": { "OTHER_CFLAGS": ["-ffp-contract=off"] }
    },
    {
      "target_name": "papo_kernels_avx2",
      "type": "static_library",
      "sources": ["native/cpu/kernels_avx2.cpp"],
      "cflags": ["-mavx2", "-mfma", "-mf16c", "-fPIC"]
    },
    {
      "target_name": "papo_kernels_avx512",
      "type": "static_library",
      "sources": ["native/cpu/kernels_avx512.cpp"],
      "cflags": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c", "-fPIC"]
    }
  ]
}
