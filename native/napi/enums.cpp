#include "napi/enums.h"

#include <initializer_list>
#include <utility>

#include "core/call.h"
#include "napi/args.h"

namespace papo {

namespace {

Napi::Object table(Napi::Env env, std::initializer_list<std::pair<const char*, int32_t>> entries) {
  Napi::Object t = Napi::Object::New(env);
  for (const auto& e : entries) t.Set(e.first, e.second);
  return t;
}

}  // namespace

Napi::Object enum_tables(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("dtype", table(env, {{"float32", DT_F32}, {"float16", DT_F16}, {"bfloat16", DT_BF16}}));
  o.Set("backend", table(env, {{"cpu", (int32_t)Backend::Cpu},
                               {"cuda", (int32_t)Backend::Cuda},
                               {"cuda-naive", (int32_t)Backend::CudaNaive}}));
  o.Set("klEstimator", table(env, {{"k1", KL_K1}, {"k2", KL_K2}, {"k3", KL_K3}, {"abs", KL_ABS}}));
  o.Set("entropyMode", table(env, {{"sampled", ENTROPY_SAMPLED}, {"full", ENTROPY_FULL}}));
  o.Set("lossAgg", table(env, {{"token-mean", AGG_TOKEN_MEAN},
                               {"seq-mean-token-mean", AGG_SEQ_MEAN_TOKEN_MEAN},
                               {"seq-mean-token-sum", AGG_SEQ_MEAN_TOKEN_SUM},
                               {"seq-mean-token-sum-norm", AGG_SEQ_MEAN_TOKEN_SUM_NORM}}));
  o.Set("lossType", table(env, {{"ppo", LOSS_PPO},
                                {"gspo", LOSS_GSPO},
                                {"gspo-token", LOSS_GSPO_TOKEN},
                                {"cispo", LOSS_CISPO},
                                {"sapo", LOSS_SAPO}}));
  o.Set("rolloutCorrection", table(env, {{"truncate", ROLLOUT_TRUNCATE}, {"mask", ROLLOUT_MASK}}));
  return o;
}

}  // namespace papo
