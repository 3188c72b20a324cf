#include "profile.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "bytes.h"
#include "crc32c.h"
#include "errors.h"

namespace kvtc {
namespace {
constexpr uint32_t kProfileMagic = 0x5054564bu;  // "KVTP"
}

void StreamGroup::derive(bool int8) {
  if (basis.size() != size_t(k) * p || mean.size() != p || eigen.size() != p)
    fail("E_PROFILE", "profile group arrays do not match their dimensions");
  for (const PlanGroup& g : plan) {
    if (g.size == 0 || g.bits == 0 || g.bits > 8 || uint64_t(g.start) + g.size > k || g.mode > kGroupStatic ||
        (g.mode == kGroupStatic && !(g.scale > 0 && std::isfinite(g.scale) && std::isfinite(g.shift))))
      fail("E_PROFILE", "profile bit plan is inconsistent");
    if (!g.levels.empty()) {
      if (g.mode != kGroupStatic || g.bits > kMaxLevelBits || g.levels.size() != (size_t(g.size) << g.bits))
        fail("E_PROFILE", "profile reconstruction levels do not match their plan group");
      for (float v : g.levels)
        if (!std::isfinite(v)) fail("E_PROFILE", "profile reconstruction levels are not finite");
    }
  }
  row = make_row_layout(plan, static_byte_contexts);
  if (row.k != k) fail("E_PROFILE", "profile bit plan does not cover the kept components");
  if (freqs.size() != size_t(row.numContexts()) * 256) fail("E_PROFILE", "profile entropy tables have the wrong size");
  tables.resize(row.numContexts());
  for (uint32_t c = 0; c < row.numContexts(); c++) rans_build_table(&freqs[size_t(c) * 256], tables[c]);
  encode_b = pack_bt(int(p), int(k), basis.data(), int(p));
  decode_b = pack_b(int(k), int(p), basis.data(), int(p));
  double msq = 0;
  for (float m : mean) msq += double(m) * m;
  mean_norm = std::sqrt(msq);
  if (int8) decode_i8 = make_int8_basis(row, basis.data(), int(k), int(p));
}

std::vector<uint8_t> serialize_profile(const Profile& pr) {
  ByteWriter w;
  w.put<uint32_t>(kProfileMagic);
  w.put<uint32_t>(kProfileVersion);
  w.put<uint32_t>(pr.layers);
  w.put<uint32_t>(pr.kv_heads);
  w.put<uint32_t>(pr.head_dim);
  w.put<uint8_t>(uint8_t(pr.dtype));
  w.put<uint8_t>(uint8_t(pr.rope.style));
  w.put<uint16_t>(uint16_t(pr.rope.dims));
  w.put<double>(pr.rope_theta);
  w.put<uint32_t>(uint32_t(pr.rope.freqs.size()));
  w.array(pr.rope.freqs);
  w.put<uint32_t>(pr.sinks);
  w.put<uint32_t>(pr.window);
  w.put<uint32_t>(pr.group_layers);
  w.put<double>(pr.ratio);
  w.put<uint64_t>(pr.seed);
  w.put<uint64_t>(pr.calib_tokens);
  w.put<uint8_t>(uint8_t(pr.allocation));
  w.put<uint8_t>(uint8_t(pr.weighting));
  w.put<uint16_t>(0);
  w.put<uint32_t>(pr.target_tokens);
  w.put<double>(pr.expected_ratio);
  w.put<uint32_t>(uint32_t(pr.groups[0].size()));
  for (int s = 0; s < 2; s++) {
    for (const StreamGroup& g : pr.groups[s]) {
      w.put<uint32_t>(g.layer_start);
      w.put<uint32_t>(g.layer_count);
      w.put<uint32_t>(g.p);
      w.put<uint32_t>(g.k);
      w.put<uint32_t>(uint32_t(g.plan.size()));
      w.put<double>(g.total_energy);
      w.put<double>(g.mean_square);
      w.put<double>(g.predicted_err);
      w.put<double>(g.weight);
      w.put<double>(g.planned_bits);
      for (const PlanGroup& pg : g.plan) {
        w.put<uint32_t>(pg.start);
        w.put<uint32_t>(pg.size);
        w.put<uint32_t>(pg.bits);
        w.put<uint32_t>(pg.mode);
        w.put<float>(pg.shift);
        w.put<float>(pg.scale);
        w.put<uint32_t>(uint32_t(pg.levels.size()));
        w.array(pg.levels);
      }
      w.array(g.eigen);
      w.array(g.mean);
      w.array(g.basis);
      w.array(g.freqs);
      w.align(4);
    }
  }
  w.put<uint32_t>(crc32c(0, w.buf.data(), w.buf.size()));
  return std::move(w.buf);
}

std::shared_ptr<Profile> parse_profile(const uint8_t* data, size_t len) {
  if (len < 12) fail("E_PROFILE", "profile is too short (" + std::to_string(len) + " bytes)");
  uint32_t stored_crc;
  std::memcpy(&stored_crc, data + len - 4, 4);
  ByteReader r(data, len - 4, "E_PROFILE");
  if (r.get<uint32_t>("magic") != kProfileMagic) fail("E_PROFILE", "not a kvtc profile (bad magic)");
  const uint32_t version = r.get<uint32_t>("version");
  if (version < 1 || version > kProfileVersion)
    fail("E_PROFILE", "unsupported profile version " + std::to_string(version) + " (this build reads " +
                          std::to_string(kProfileVersion) + ")");
  if (crc32c(0, data, len - 4) != stored_crc) fail("E_PROFILE", "profile checksum mismatch (file is damaged)");
  auto pr = std::make_shared<Profile>();
  pr->layers = r.get<uint32_t>("layers");
  pr->kv_heads = r.get<uint32_t>("kvHeads");
  pr->head_dim = r.get<uint32_t>("headDim");
  const uint8_t dt = r.get<uint8_t>("dtype");
  if (dt > 2) fail("E_PROFILE", "profile dtype is invalid");
  pr->dtype = DType(dt);
  const uint8_t style = r.get<uint8_t>("rope style");
  if (style > 2) fail("E_PROFILE", "profile rope style is invalid");
  pr->rope.style = RopeStyle(style);
  pr->rope.dims = r.get<uint16_t>("rope dims");
  pr->rope_theta = r.get<double>("rope theta");
  const uint32_t nf = r.get<uint32_t>("rope freqs");
  r.array(pr->rope.freqs, nf, "rope freqs");
  if (pr->layers == 0 || pr->kv_heads == 0 || pr->head_dim == 0 || pr->layers > 4096 || pr->kv_heads > 4096 ||
      pr->head_dim > 8192)
    fail("E_PROFILE", "profile layout is invalid");
  if (pr->rope.style != RopeStyle::None &&
      (pr->rope.dims <= 0 || pr->rope.dims % 2 || uint32_t(pr->rope.dims) > pr->head_dim || nf != uint32_t(pr->rope.dims / 2)))
    fail("E_PROFILE", "profile rope spec is invalid");
  pr->sinks = r.get<uint32_t>("sinks");
  pr->window = r.get<uint32_t>("window");
  pr->group_layers = r.get<uint32_t>("group layers");
  pr->ratio = r.get<double>("ratio");
  pr->seed = r.get<uint64_t>("seed");
  pr->calib_tokens = r.get<uint64_t>("calibration tokens");
  if (version >= 2) {
    const uint8_t alloc = r.get<uint8_t>("allocation");
    const uint8_t weighting = r.get<uint8_t>("weighting");
    r.get<uint16_t>("reserved");
    if (alloc > 1 || weighting > 1) fail("E_PROFILE", "profile allocation mode is invalid");
    pr->allocation = Allocation(alloc);
    pr->weighting = Weighting(weighting);
    pr->target_tokens = r.get<uint32_t>("target tokens");
    pr->expected_ratio = r.get<double>("expected ratio");
  }
  const uint32_t ng = r.get<uint32_t>("group count");
  if (ng == 0 || ng > pr->layers) fail("E_PROFILE", "profile group count is invalid");
  for (int s = 0; s < 2; s++) {
    pr->groups[s].resize(ng);
    uint32_t next_layer = 0;
    for (StreamGroup& g : pr->groups[s]) {
      g.layer_start = r.get<uint32_t>("group layer start");
      g.layer_count = r.get<uint32_t>("group layer count");
      g.p = r.get<uint32_t>("group p");
      g.k = r.get<uint32_t>("group k");
      const uint32_t nplan = r.get<uint32_t>("plan size");
      if (g.layer_start != next_layer || g.layer_count == 0 || g.layer_start + g.layer_count > pr->layers ||
          uint64_t(g.p) != uint64_t(g.layer_count) * pr->row_values() || g.k > g.p || nplan > g.p)
        fail("E_PROFILE", "profile group dimensions are invalid");
      next_layer += g.layer_count;
      g.total_energy = r.get<double>("energy");
      g.mean_square = r.get<double>("mean square");
      g.predicted_err = r.get<double>("predicted error");
      if (version >= 2) {
        g.weight = r.get<double>("weight");
        g.planned_bits = r.get<double>("planned bits");
        if (!(g.weight >= 0) || !std::isfinite(g.weight) || !(g.planned_bits >= 0))
          fail("E_PROFILE", "profile group weight is invalid");
      }
      g.plan.resize(nplan);
      for (PlanGroup& pg : g.plan) {
        pg.start = r.get<uint32_t>("plan start");
        pg.size = r.get<uint32_t>("plan size");
        const uint32_t bits = r.get<uint32_t>("plan bits");
        if (bits == 0 || bits > 8) fail("E_PROFILE", "profile plan width is invalid");
        pg.bits = uint8_t(bits);
        if (version >= 2) {
          const uint32_t mode = r.get<uint32_t>("plan mode");
          if (mode > kGroupStatic) fail("E_PROFILE", "profile plan quantizer is invalid");
          pg.mode = uint8_t(mode);
          pg.shift = r.get<float>("plan shift");
          pg.scale = r.get<float>("plan scale");
        }
        if (version >= 3) {
          const uint32_t nl = r.get<uint32_t>("plan levels");
          // Checked against the group in derive(); bounded here before anything is allocated.
          if (nl != 0 && nl != (pg.size << std::min<uint32_t>(pg.bits, kMaxLevelBits)))
            fail("E_PROFILE", "profile reconstruction levels do not match their plan group");
          r.array(pg.levels, nl, "plan levels");
        }
      }
      r.array(g.eigen, g.p, "eigenvalues");
      r.array(g.mean, g.p, "mean");
      r.array(g.basis, size_t(g.k) * g.p, "basis");
      r.array(g.freqs, size_t(nplan) * kContextsPerGroup * 256, "entropy tables");
      r.align(4);
      g.static_byte_contexts = version >= 3;
      if (version < 2)
        for (const PlanGroup& pg : g.plan) g.planned_bits += group_cost_bits(pg.size, pg.bits, pg.mode);
      g.derive(int8_decode_for(pr->ratio));
    }
    if (next_layer != pr->layers) fail("E_PROFILE", "profile groups do not cover every layer");
  }
  if (r.remaining() != 0) fail("E_PROFILE", "profile has trailing bytes");
  return pr;
}

}  // namespace kvtc
