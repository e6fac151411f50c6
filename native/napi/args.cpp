#include "args.h"

#include <math.h>

#include <string>

#include "core/vocab_stats.h"

namespace papo {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }

struct Span {
  void* data = nullptr;
  size_t bytes = 0;
  int64_t length = 0;
};

bool has(const Napi::Object& o, const char* key) {
  if (!o.Has(key)) return false;
  const Napi::Value v = o.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}

// A typed array of the given kind holding exactly `length` elements (-1: any length).
Span typed(const Napi::Object& o, const char* key, napi_typedarray_type type, int64_t length) {
  const Napi::Value v = o.Get(key);
  if (!v.IsTypedArray()) fail(std::string(key) + ": expected a typed array");
  const Napi::TypedArray t = v.As<Napi::TypedArray>();
  if (t.TypedArrayType() != type) fail(std::string(key) + ": wrong typed array type");
  Span s;
  s.length = (int64_t)t.ElementLength();
  if (s.length == 0 && length != 0 && t.ArrayBuffer().IsDetached())
    fail(std::string(key) + ": its ArrayBuffer is detached");
  if (length >= 0 && s.length != length)
    fail(std::string(key) + ": expected " + std::to_string(length) + " elements, got " + std::to_string(s.length));
  s.data = static_cast<char*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  s.bytes = t.ByteLength();
  return s;
}

napi_typedarray_type storage_of(int32_t dtype) { return dtype == DT_F32 ? napi_float32_array : napi_uint16_array; }

bool on_device(const Napi::Object& desc) { return desc.Get("onDevice").ToBoolean().Value(); }

// A logits or gradient tensor: a typed array of the dtype's storage, or with onDevice a { ptr, bytes } record
// of device memory (checked with the driver: device memory of the call's device, all of it in one allocation).
Span tensor(const Napi::Object& desc, const char* key, int32_t dtype, int64_t elements) {
  if (!on_device(desc)) return typed(desc, key, storage_of(dtype), elements);
  const Napi::Value v = desc.Get(key);
  if (!v.IsObject()) fail(std::string(key) + ": expected a device tensor record");
  const Napi::Object o = v.As<Napi::Object>();
  Span s;
  s.data = reinterpret_cast<void*>((uintptr_t)parse_address(o.Get("ptr"), key));
  const size_t esz = dtype_bytes(dtype);
  s.length = elements;
  s.bytes = (size_t)elements * esz;
  if (!s.data) fail(std::string(key) + ": null device pointer");
  if (reinterpret_cast<uintptr_t>(s.data) % esz) fail(std::string(key) + ": device pointer not aligned to its element size");
  const double bytes = o.Get("bytes").ToNumber().DoubleValue();
  if (bytes != (double)s.bytes)
    fail(std::string(key) + ": expected " + std::to_string(s.bytes) + " bytes of device memory, got " + std::to_string((int64_t)bytes));
  cuda_check_pointer(s.data, s.bytes, desc.Get("device").ToNumber().Int32Value(), key);
  return s;
}

int32_t dtype_of(const Napi::Object& o, const char* key) {
  const int32_t d = o.Get(key).ToNumber().Int32Value();
  if (d != DT_F32 && d != DT_F16 && d != DT_BF16) fail(std::string(key) + ": unknown dtype code");
  return d;
}

double number(const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsNumber()) fail(std::string(key) + ": expected a number");
  return v.As<Napi::Number>().DoubleValue();
}

int64_t count(const Napi::Object& o, const char* key) {
  const double d = number(o, key);
  if (!(d >= 1 && d <= 9007199254740991.0) || floor(d) != d) fail(std::string(key) + ": expected a positive integer");
  return (int64_t)d;
}

bool overlaps(const Span& a, const Span& b) {
  if (!a.data || !b.data || !a.bytes || !b.bytes) return false;
  const char *a0 = static_cast<char*>(a.data), *b0 = static_cast<char*>(b.data);
  return a0 < b0 + b.bytes && b0 < a0 + a.bytes;
}
bool same(const Span& a, const Span& b) { return a.data == b.data && a.bytes == b.bytes; }

void tokens_in_range(const Span& tokens, int64_t V) {
  const int32_t* t = static_cast<const int32_t*>(tokens.data);
  for (int64_t i = 0; i < tokens.length; ++i)
    if (t[i] < 0 || t[i] >= V)
      fail("tokens[" + std::to_string(i) + "] = " + std::to_string(t[i]) + " is outside [0, " + std::to_string(V) + ")");
}

int32_t enum_in(const Napi::Object& o, const char* key, int32_t lo, int32_t hi) {
  const double d = number(o, key);
  if (!(d >= lo && d <= hi) || floor(d) != d) fail(std::string(key) + ": unknown value");
  return (int32_t)d;
}

}  // namespace

uint64_t parse_address(const Napi::Value& v, const char* name) {
  if (v.IsUndefined() || v.IsNull()) return 0;
  if (!v.IsBigInt()) fail(std::string(name) + ": expected a bigint address");
  bool lossless = false;
  const uint64_t a = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) fail(std::string(name) + ": not a 64-bit unsigned address");
  return a;
}

Target parse_target(const Napi::Object& desc) {
  Target t;
  t.backend = (Backend)enum_in(desc, "backend", 0, 2);
  t.cuda.onDevice = on_device(desc);
  if (t.cuda.onDevice && t.backend == Backend::Cpu) fail("onDevice: device memory needs a CUDA backend");
  t.cuda.kernel = t.backend == Backend::CudaNaive ? KERNEL_K0_NAIVE : KERNEL_K2_FUSED;
  if (has(desc, "device")) {
    const double d = number(desc, "device");
    if (!(d >= 0 && d < 1024) || floor(d) != d) fail("device: expected a device index >= 0");
    t.cuda.device = (int)d;
  }
  // Device data runs on its tensor's stream as given, 0 being the legacy default stream (CudaExec).
  t.cuda.stream = parse_address(desc.Get("stream"), "stream");
  if (t.cuda.stream && !t.cuda.onDevice) fail("stream: only for device-resident tensors");
  if (has(desc, "maskedStream")) {
    if (!t.cuda.onDevice) fail("maskedStream: only for device-resident tensors");
    t.cuda.maskedStream = parse_address(desc.Get("maskedStream"), "maskedStream");
    t.cuda.hasMaskedStream = t.cuda.maskedStream != t.cuda.stream;
  }
  return t;
}

PapoCall parse_papo_call(const Napi::Object& desc) {
  PapoCall c;
  c.N = count(desc, "N");
  c.V = count(desc, "V");
  c.temperature = number(desc, "temperature");

  c.dtype = dtype_of(desc, "dtype");
  const Span logits = tensor(desc, "logits", c.dtype, c.N * c.V);
  c.logits = logits.data;
  Span masked;
  if (has(desc, "maskedLogits")) {
    c.maskedDtype = dtype_of(desc, "maskedDtype");
    masked = tensor(desc, "maskedLogits", c.maskedDtype, c.N * c.V);
    c.maskedLogits = masked.data;
  }
  if (has(desc, "maskedLogProbs")) {
    if (c.maskedLogits) fail("maskedLogProbs: give maskedLogits or maskedLogProbs, not both");
    const Span a = typed(desc, "maskedLogProbs", napi_float32_array, c.N);
    c.maskedLogProbs = static_cast<const float*>(a.data);
  }

  // A vocabulary shard: tokens index the whole vocabulary, the shard's columns lie inside it, and the merged
  // statistics are there for every path that has logits.
  if (has(desc, "vocabStats")) {
    c.vocabTotal = count(desc, "vocabTotal");
    const double start = number(desc, "vocabStart");
    if (!(start >= 0) || floor(start) != start || start + (double)c.V > (double)c.vocabTotal)
      fail("vocabStart: the shard's columns must lie inside [0, vocabTotal)");
    c.vocabStart = (int64_t)start;
    c.vocabStats = static_cast<const double*>(typed(desc, "vocabStats", napi_float64_array, VS_FIELDS * c.N).data);
    if (c.maskedLogits)
      c.maskedVocabStats =
          static_cast<const double*>(typed(desc, "maskedVocabStats", napi_float64_array, VS_FIELDS * c.N).data);
  }
  const Span tokens = typed(desc, "tokens", napi_int32_array, c.N);
  tokens_in_range(tokens, c.vocabStats ? c.vocabTotal : c.V);
  c.tokens = static_cast<const int32_t*>(tokens.data);
  const Span adv = typed(desc, "advantages", napi_float32_array, c.N);
  c.advantages = static_cast<const float*>(adv.data);
  if (has(desc, "mask")) {
    const Span m = typed(desc, "mask", napi_float32_array, c.N);
    c.mask = static_cast<const float*>(m.data);
  }
  if (has(desc, "oldLogProbs")) {
    const Span s = typed(desc, "oldLogProbs", napi_float32_array, c.N);
    c.oldLogProbs = static_cast<const float*>(s.data);
  }
  if (has(desc, "refLogProbs")) {
    const Span s = typed(desc, "refLogProbs", napi_float32_array, c.N);
    c.refLogProbs = static_cast<const float*>(s.data);
  }
  Span lengths;
  if (has(desc, "seqLengths")) {
    const Span s = lengths = typed(desc, "seqLengths", napi_int32_array, -1);
    if (s.length < 1) fail("seqLengths: expected at least one sequence");
    int64_t total = 0;
    for (int64_t i = 0; i < s.length; ++i) {
      const int32_t len = static_cast<const int32_t*>(s.data)[i];
      if (len < 0) fail("seqLengths[" + std::to_string(i) + "] is negative");
      total += len;
    }
    if (total != c.N) fail("seqLengths: they add up to " + std::to_string(total) + ", not N = " + std::to_string(c.N));
    c.seqLengths = static_cast<const int32_t*>(s.data);
    c.numSeqs = s.length;
  }
  if (has(desc, "rolloutLogProbs")) {
    const Span s = typed(desc, "rolloutLogProbs", napi_float32_array, c.N);
    c.rolloutLogProbs = static_cast<const float*>(s.data);
  }
  for (const char* key : {"perceptionWeights", "sftMask"}) {
    if (!has(desc, key)) continue;
    const Span s = typed(desc, key, napi_float32_array, c.numSeqs);
    (std::string(key) == "sftMask" ? c.sftMask : c.perceptionWeights) = static_cast<const float*>(s.data);
  }

  const Napi::Value pv = desc.Get("params");
  if (!pv.IsObject()) fail("params: expected an object");
  const Napi::Object p = pv.As<Napi::Object>();
  LossParams& lp = c.params;
  lp.lossType = enum_in(p, "lossType", LOSS_PPO, LOSS_SAPO);
  lp.clipLow = number(p, "clipLow");
  lp.clipHigh = number(p, "clipHigh");
  lp.clipDual = number(p, "clipDual");
  if (lp.lossType == LOSS_SAPO) {
    lp.sapoTauPositive = number(p, "sapoTauPositive");
    lp.sapoTauNegative = number(p, "sapoTauNegative");
  }
  lp.klCoef = number(p, "klCoef");
  lp.klEstimator = enum_in(p, "klEstimator", KL_K1, KL_ABS);
  lp.perceptionCoef = number(p, "perceptionCoef");
  lp.perceptionEstimator = enum_in(p, "perceptionEstimator", KL_K1, KL_ABS);
  lp.entropyCoef = number(p, "entropyCoef");
  lp.maskedEntropyCoef = number(p, "maskedEntropyCoef");
  lp.entropyMode = enum_in(p, "entropyMode", ENTROPY_SAMPLED, ENTROPY_FULL);
  lp.detachMasked = (p.Get("detachMasked").ToBoolean().Value() || c.maskedLogProbs) ? 1 : 0;
  if (has(p, "perceptionClipLo")) {
    lp.perceptionClip = 1;
    lp.perceptionClipLo = number(p, "perceptionClipLo");
    lp.perceptionClipHi = number(p, "perceptionClipHi");
  }
  if (has(p, "rolloutCorrection")) {
    lp.rolloutCorrection = enum_in(p, "rolloutCorrection", ROLLOUT_TRUNCATE, ROLLOUT_MASK);
    lp.rolloutUpper = number(p, "rolloutUpper");
    lp.rolloutLower = number(p, "rolloutLower");
    if (!c.rolloutLogProbs) fail("rolloutLogProbs: required with rolloutCorrection");
  }
  if (has(p, "perceptionTopP")) {
    lp.perceptionTopP = number(p, "perceptionTopP");
    // Outside (0, 1) the quantile's index (sequence_phase.cpp) would leave the sequence.
    if (!(lp.perceptionTopP > 0 && lp.perceptionTopP < 1)) fail("perceptionTopP: expected a number in (0, 1)");
  }
  lp.sftCoef = has(p, "sftCoef") ? number(p, "sftCoef") : 0.0;
  if (lp.sftCoef != 0 && !c.sftMask) fail("sftMask: required when sftCoef is non-zero");
  lp.onPolicy = c.oldLogProbs == nullptr;
  lp.hasRef = c.refLogProbs != nullptr;
  lp.hasMasked = c.maskedLogits != nullptr || c.maskedLogProbs != nullptr;
  if (lp.klCoef != 0 && !lp.hasRef) fail("refLogProbs: required when klCoef != 0");
  if (!lp.hasMasked && (lp.perceptionCoef != 0 || lp.maskedEntropyCoef != 0))
    fail("maskedLogits: required when perceptionCoef or maskedEntropyCoef is non-zero");
  if (lp.entropyMode == ENTROPY_FULL && !c.maskedLogits && lp.maskedEntropyCoef != 0)
    fail("maskedLogits: entropyMode 'full' needs the masked logits for the masked entropy");
  if (!lp.hasMasked && (c.perceptionWeights || lp.perceptionTopP > 0))
    fail("maskedLogits: perceptionWeights and perceptionTopP need a masked path");

  c.lossAgg = enum_in(desc, "lossAgg", AGG_TOKEN_MEAN, AGG_SEQ_MEAN_TOKEN_SUM_NORM);
  c.lossScale = number(desc, "lossScale");
  c.normScale = number(desc, "normScale");

  Span grad, mgrad;
  if (has(desc, "gradLogits")) {
    c.gradType = dtype_of(desc, "gradType");
    if (c.gradType != c.dtype && c.gradType != DT_F32) fail("gradType: must be the input's dtype or float32");
    grad = tensor(desc, "gradLogits", c.gradType, c.N * c.V);
    c.gradLogits = grad.data;
  }
  if (has(desc, "gradMaskedLogits")) {
    if (!c.maskedLogits) fail("gradMaskedLogits: there are no maskedLogits");
    if (lp.detachMasked) fail("gradMaskedLogits: the masked path is detached");
    c.gradMaskedType = dtype_of(desc, "gradMaskedType");
    if (c.gradMaskedType != c.maskedDtype && c.gradMaskedType != DT_F32)
      fail("gradMaskedType: must be the masked input's dtype or float32");
    mgrad = tensor(desc, "gradMaskedLogits", c.gradMaskedType, c.N * c.V);
    c.gradMaskedLogits = mgrad.data;
  }
  // A gradient may replace its own path's logits exactly (in place) and overlap nothing else.
  if (grad.data && ((overlaps(grad, logits) && !same(grad, logits)) || overlaps(grad, masked) || overlaps(grad, mgrad)))
    fail("gradLogits: overlaps another tensor (in place needs two separate logits buffers)");
  if (mgrad.data && ((overlaps(mgrad, masked) && !same(mgrad, masked)) || overlaps(mgrad, logits)))
    fail("gradMaskedLogits: overlaps another tensor (in place needs two separate logits buffers)");
  // The kernels index rows by the tokens and sequences by their lengths, read while gradients are written: a
  // gradient over them would turn into reads out of bounds.
  for (const Span* g : {&grad, &mgrad})
    if (overlaps(*g, tokens) || overlaps(*g, lengths))
      fail(std::string(g == &grad ? "gradLogits" : "gradMaskedLogits") + ": overlaps tokens or seqLengths");

  c.outLogProbs = static_cast<float*>(typed(desc, "outLogProbs", napi_float32_array, c.N).data);
  c.outEntropy = static_cast<float*>(typed(desc, "outEntropy", napi_float32_array, c.N).data);
  if (c.maskedLogits) {
    c.outMaskedLogProbs = static_cast<float*>(typed(desc, "outMaskedLogProbs", napi_float32_array, c.N).data);
    c.outMaskedEntropy = static_cast<float*>(typed(desc, "outMaskedEntropy", napi_float32_array, c.N).data);
  }
  return c;
}

ShardedPapoCall parse_sharded_papo_call(const Napi::Object& desc) {
  const Napi::Value list = desc.Get("shards");
  if (!list.IsArray() || list.As<Napi::Array>().Length() == 0) fail("shards: expected a non-empty array");
  const Napi::Array a = list.As<Napi::Array>();
  ShardedPapoCall sc;
  for (uint32_t k = 0; k < a.Length(); ++k) {
    const Napi::Value v = a.Get(k);
    const std::string name = "shards[" + std::to_string(k) + "]";
    if (!v.IsObject()) fail(name + ": expected a descriptor");
    // The CPU's row loop reads and writes each shard's memory from the host.
    const Napi::Object d = v.As<Napi::Object>();
    if (on_device(d) || has(d, "stream") || has(d, "maskedStream")) fail(name + ": host data only");
    sc.shards.push_back(parse_papo_call(d));
  }
  const PapoCall& first = sc.shards[0];
  Span stats = typed(desc, "stats", napi_float64_array, VS_FIELDS * first.N);
  sc.stats = static_cast<double*>(stats.data);
  Span masked;
  if (first.maskedLogits) {
    masked = typed(desc, "maskedStats", napi_float64_array, VS_FIELDS * first.N);
    sc.maskedStats = static_cast<double*>(masked.data);
  }
  // Every shard reads shards[0]'s tokens and sequences (its own are checked against its own gradients only), writes the statistics they point to, and covers the
  // vocabulary its tokens index, in order.
  int64_t end = 0;
  for (size_t k = 0; k < sc.shards.size(); ++k) {
    const PapoCall& c = sc.shards[k];
    const std::string name = "shards[" + std::to_string(k) + "]";
    if (c.N != first.N) fail(name + ": expected the N of shards[0]");
    if (!c.vocabStats || c.vocabStats != sc.stats || c.maskedVocabStats != sc.maskedStats)
      fail(name + ": vocabStats must be the call's stats (and maskedStats)");
    if (!c.maskedLogits != !first.maskedLogits) fail(name + ": maskedLogits in some shards only");
    if (c.vocabStart != end) fail(name + ": vocabStart must follow the shard before");
    end += c.V;
  }
  if (end != first.vocabTotal) fail("shards: their widths must add up to vocabTotal");
  // The merged statistics are written while tokens and sequence lengths are read.
  const Span tokens{const_cast<int32_t*>(first.tokens), (size_t)first.N * sizeof(int32_t), first.N};
  const Span lengths{const_cast<int32_t*>(first.seqLengths), first.seqLengths ? (size_t)first.numSeqs * sizeof(int32_t) : 0,
                     first.numSeqs};
  for (const Span* st : {&stats, &masked})
    if (overlaps(*st, tokens) || overlaps(*st, lengths) || overlaps(stats, masked))
      fail("stats: overlaps tokens, seqLengths or the other statistics");
  for (size_t k = 0; k < sc.shards.size(); ++k) {
    const PapoCall& c = sc.shards[k];
    const Span grads[2] = {{c.gradLogits, c.gradLogits ? (size_t)(c.N * c.V) * dtype_bytes(c.gradType) : 0, 0},
                           {c.gradMaskedLogits, c.gradMaskedLogits ? (size_t)(c.N * c.V) * dtype_bytes(c.gradMaskedType) : 0, 0}};
    for (const Span& g : grads)
      if (overlaps(g, tokens) || overlaps(g, lengths) || overlaps(g, stats) || overlaps(g, masked))
        fail("shards[" + std::to_string(k) + "]: a gradient overlaps shards[0]'s tokens or seqLengths, or the statistics");
  }
  return sc;
}

namespace {
// The rows every forward-only call reads: N, V, the temperature and one logits tensor.
template <class Call>
void parse_rows(const Napi::Object& desc, Call& c) {
  c.N = count(desc, "N");
  c.V = count(desc, "V");
  c.temperature = number(desc, "temperature");
  c.dtype = dtype_of(desc, "dtype");
  c.logits = tensor(desc, "logits", c.dtype, c.N * c.V).data;
}
}  // namespace

VocabStatsCall parse_vocab_stats_call(const Napi::Object& desc) {
  VocabStatsCall c;
  parse_rows(desc, c);
  const double start = number(desc, "vocabStart");
  if (!(start >= 0 && start <= 2147483647.0) || floor(start) != start) fail("vocabStart: expected an integer >= 0");
  c.vocabStart = (int64_t)start;
  // Any int32 id is safe: only an id inside the shard's columns is read.
  c.tokens = static_cast<const int32_t*>(typed(desc, "tokens", napi_int32_array, c.N).data);
  c.out = static_cast<double*>(typed(desc, "out", napi_float64_array, VS_FIELDS * c.N).data);
  if (has(desc, "name")) c.tensorName = desc.Get("name").ToString().Utf8Value();
  return c;
}

LogProbsCall parse_log_probs_call(const Napi::Object& desc) {
  LogProbsCall c;
  parse_rows(desc, c);
  const Span tokens = typed(desc, "tokens", napi_int32_array, c.N);
  tokens_in_range(tokens, c.V);
  c.tokens = static_cast<const int32_t*>(tokens.data);
  c.outLogProbs = static_cast<float*>(typed(desc, "outLogProbs", napi_float32_array, c.N).data);
  c.outEntropy = static_cast<float*>(typed(desc, "outEntropy", napi_float32_array, c.N).data);
  return c;
}

}  // namespace papo
