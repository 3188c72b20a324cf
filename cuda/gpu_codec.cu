// The GPU encode and decode pipelines: the CPU codec's steps (codec.cc) as kernels, writing and
// reading the same container. Host work is limited to the header, the escape list, the chunk
// tables and the checksum; the cache itself moves once to (or from) the device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>

#include "../native/codec.h"  // CacheView, EncodeOptions: the codec's API types
#include "../native/container.h"  // the blob format: header, sections, escapes, seal
#include "codec_kernels.cuh"
#include "cuda_check.cuh"
#include "gemm.cuh"
#include "gpu.h"

namespace kvtc::gpu {
namespace {

// Device memory that lives as long as a profile's device copy. Freed in stream order on the
// legacy default stream (after every call that used it has synchronized its own stream): the
// last reference to a profile may go on the JavaScript thread, where a cudaFree, which waits
// for the whole device, must not run.
template <typename T>
class DeviceConst {
 public:
  DeviceConst() = default;
  DeviceConst(const std::vector<T>& v, const Stream& st) : n_(v.size()) {
    if (v.empty()) return;
    check(cudaMallocAsync(reinterpret_cast<void**>(&p_), v.size() * sizeof(T), st.get()), "device allocation");
    const cudaError_t e = cudaMemcpyAsync(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, st.get());
    if (e != cudaSuccess) {
      cudaFreeAsync(p_, st.get());
      p_ = nullptr;
      check(e, "profile upload");
    }
  }
  ~DeviceConst() {
    if (p_) cudaFreeAsync(p_, nullptr);
  }
  DeviceConst(const DeviceConst&) = delete;
  DeviceConst& operator=(const DeviceConst&) = delete;
  const T* get() const { return p_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

std::vector<uint32_t> plan_table(const StreamGroup& g) {
  std::vector<uint32_t> plan;
  uint32_t level_at = 0;
  for (size_t j = 0; j < g.row.groups.size(); j++) {
    const PlanGroup& pg = g.row.groups[j];
    uint32_t shift, scale;  // static groups' parameters, as float bits
    std::memcpy(&shift, &pg.shift, 4);
    std::memcpy(&scale, &pg.scale, 4);
    const uint32_t levels = pg.levels.empty() ? kKernelNoLevels : level_at;
    level_at += uint32_t(pg.levels.size());
    plan.insert(plan.end(),
                {pg.start, pg.size, uint32_t(pg.bits), g.row.offset[j], uint32_t(pg.mode), shift, scale, levels});
  }
  return plan;
}

// Every plan group's reconstruction levels, in plan order (plan_table gives each its offset).
std::vector<float> level_table(const StreamGroup& g) {
  std::vector<float> levels;
  for (const PlanGroup& pg : g.row.groups) levels.insert(levels.end(), pg.levels.begin(), pg.levels.end());
  return levels;
}

struct GroupConsts {
  GroupConsts(const StreamGroup& g, const Stream& st)
      : mean(g.mean, st), basis(g.basis, st), plan(plan_table(g), st), levels(level_table(g), st),
        context(g.row.context, st), tables(g.tables, st),
        kg{g.layer_start, g.layer_count, g.p, g.k, mean.get(), uint32_t(g.row.groups.size()), plan.get(),
           g.row.rowBytes, levels.get()} {}
  DeviceConst<float> mean, basis;  // basis: k x p (the encoder multiplies by its transpose)
  DeviceConst<uint32_t> plan;
  DeviceConst<float> levels;
  DeviceConst<uint16_t> context;
  DeviceConst<RansTable> tables;
  KernelGroup kg;
};

// A profile's constants on the device, uploaded once per process and shared by every call.
struct GpuProfile {
  GpuProfile(const Profile& pr, const Stream& st) : freqs(pr.rope.freqs, st) {
    for (int s = 0; s < 2; s++)
      for (const StreamGroup& g : pr.groups[s]) groups[s].push_back(std::make_unique<GroupConsts>(g, st));
    st.sync();  // calls use the constants from other streams
  }
  DeviceConst<float> freqs;
  std::vector<std::unique_ptr<GroupConsts>> groups[2];
};

// The profile's device constants: uploaded at its first GPU call, released with the profile.
std::shared_ptr<const GpuProfile> gpu_profile(const Profile& pr) {
  BackendCache& c = *pr.backend_cache;
  std::lock_guard<std::mutex> lk(c.m);
  if (!c.gpu) c.gpu = std::make_shared<const GpuProfile>(pr, Stream{0});
  return std::static_pointer_cast<const GpuProfile>(c.gpu);
}

KernelLayout kernel_layout(const Profile& pr, DType dtype, bool is_key) {
  return KernelLayout{pr.layers, pr.kv_heads, pr.head_dim, pr.row_values(), dtype,
                      is_key ? pr.rope.style : RopeStyle::None, pr.rope.dims};
}

// Tokens per feature batch: bounds the float workspaces to ~64 MiB each and the grid to its
// y limit.
uint32_t batch_rows(uint32_t p, uint32_t k) {
  const uint64_t per_row = uint64_t(std::max(std::max(p, k), 1u)) * sizeof(float);
  return uint32_t(std::clamp<uint64_t>((uint64_t(64) << 20) / per_row, 64, 65535));
}

// RoPE angles of the coded tokens (keys only): cos/sin[i * half + f].
struct Angles {
  std::unique_ptr<DeviceArray<float>> cos, sin;
  int half = 0;
  const float* cos_at(uint32_t i) const { return cos ? cos->get() + size_t(i) * half : nullptr; }
  const float* sin_at(uint32_t i) const { return sin ? sin->get() + size_t(i) * half : nullptr; }
};

Angles rope_angles_of(const Profile& pr, const GpuProfile& gp, const std::vector<int32_t>& pos, const Stream& st) {
  Angles a;
  if (pr.rope.style == RopeStyle::None || pos.empty()) return a;
  a.half = pr.rope.dims / 2;
  DeviceArray<int32_t> d_pos(pos.size(), st);
  d_pos.upload(pos.data(), pos.size());
  a.cos = std::make_unique<DeviceArray<float>>(pos.size() * a.half, st);
  a.sin = std::make_unique<DeviceArray<float>>(pos.size() * a.half, st);
  check_launch(launch_rope_angles(gp.freqs.get(), a.half, d_pos.get(), uint32_t(pos.size()), a.cos->get(),
                                  a.sin->get(), st.get()),
               "rope angles");
  return a;
}

template <typename T>
std::unique_ptr<DeviceArray<T>> upload_array(const std::vector<T>& v, const Stream& st) {
  auto d = std::make_unique<DeviceArray<T>>(v.size(), st);
  d->upload(v.data(), v.size());
  return d;
}

// Transform and quantize one stream group's coded tokens into rows (nc x rowBytes) on the device.
void quantize_section(const StreamGroup& g, const GroupConsts& gc, const KernelLayout& lay, const void* const* layers,
                      const DeviceArray<uint32_t>& coded, uint32_t nc, const Angles& ang, uint8_t* rows,
                      const Stream& st) {
  if (nc == 0 || g.row.rowBytes == 0) return;
  const uint32_t batch = std::min(batch_rows(g.p, g.k), nc);
  DeviceArray<float> X(size_t(batch) * g.p, st), D(size_t(batch) * g.k, st);
  for (uint32_t b0 = 0; b0 < nc; b0 += batch) {
    const uint32_t nb = std::min(batch, nc - b0);
    check_launch(launch_gather_features(layers, lay, gc.kg, coded.get() + b0, nb, ang.cos_at(b0), ang.sin_at(b0),
                                        X.get(), st.get()),
                 "feature gather");
    check_launch(launch_gemm_f32(int(nb), int(g.k), int(g.p), X.get(), int(g.p), gc.basis.get(), int(g.p), true,
                                 D.get(), int(g.k), st.get()),
                 "projection");
    check_launch(launch_quantize(D.get(), g.k, nb, gc.kg, rows + size_t(b0) * g.row.rowBytes, st.get()),
                 "quantization");
  }
}

// A coded section on the device: its stream group and its quantized rows.
struct CodedSection {
  const StreamGroup* g;
  const GroupConsts* gc;
  uint8_t* rows;  // nc x rowBytes
};

// Copies of at most this many bytes, so one large stored section spreads over many blocks.
constexpr uint64_t kCopyPiece = 64 << 10;

void add_copy(std::vector<CopyJob>& jobs, const uint8_t* src, uint8_t* dst, uint64_t len) {
  for (uint64_t at = 0; at < len; at += kCopyPiece) jobs.push_back(CopyJob{src + at, dst + at, std::min(kCopyPiece, len - at)});
}

// Entropy-codes every coded section in one launch (one thread per chunk, across all sections),
// keeps a section's chunked form only when smaller than its rows (as the CPU does), packs every
// payload into one buffer in one launch and brings it back with one copy.
std::vector<std::vector<uint8_t>> finish_sections(const std::vector<CodedSection>& secs, uint32_t nc, bool entropy,
                                                  std::vector<SectionInfo>& info, const Stream& st) {
  const size_t n = secs.size();
  info.assign(n, SectionInfo{});
  std::vector<size_t> first(n + 1, 0);
  std::vector<uint32_t> chunk_rows(n, 0);
  std::vector<RansEncodeJob> jobs;
  std::vector<uint64_t> slot;  // each job's slot offset in the scratch buffer
  uint64_t scratch_bytes = 0;
  for (size_t i = 0; i < n; i++) {
    const uint32_t rb = secs[i].g->row.rowBytes;
    const uint64_t raw_len = uint64_t(nc) * rb;
    info[i] = SectionInfo{SectionMode::Stored, uint32_t(raw_len), uint32_t(raw_len), 0};
    first[i] = jobs.size();
    if (entropy && raw_len > 0) {
      chunk_rows[i] = rans_chunk_rows(rb);
      const uint64_t cap = rans_span_bound(size_t(chunk_rows[i]) * rb);
      for (uint32_t r0 = 0; r0 < nc; r0 += chunk_rows[i]) {
        const uint32_t nr = std::min(chunk_rows[i], nc - r0);
        jobs.push_back(RansEncodeJob{secs[i].rows + size_t(r0) * rb, uint64_t(nr) * rb, nullptr, cap,
                                     secs[i].gc->context.get(), secs[i].gc->tables.get(), rb});
        slot.push_back(scratch_bytes);
        scratch_bytes += cap;
      }
    }
  }
  first[n] = jobs.size();
  DeviceArray<uint8_t> scratch(scratch_bytes, st);
  for (size_t j = 0; j < jobs.size(); j++) jobs[j].slot = scratch.get() + slot[j];
  std::vector<uint64_t> start(jobs.size());
  DeviceArray<uint64_t> d_start(jobs.size(), st);
  auto d_jobs = upload_array(jobs, st);
  check_launch(launch_rans_encode(d_jobs->get(), uint32_t(jobs.size()), d_start.get(), st.get()), "entropy coding");
  d_start.download(start.data(), start.size());
  st.sync();

  // Each section's payload: [chunk table (host)] + bytes packed on the device at out_at[i].
  std::vector<std::vector<uint8_t>> payloads(n);
  std::vector<uint64_t> out_at(n, 0), out_len(n, 0);
  uint64_t out_bytes = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t coded = 0;
    for (size_t j = first[i]; j < first[i + 1]; j++) {
      if (start[j] > jobs[j].cap) fail("E_INTERNAL", "entropy coder exceeded its worst-case bound");
      coded += jobs[j].cap - start[j];
    }
    const uint32_t count = uint32_t(first[i + 1] - first[i]);
    const uint64_t table = rans_chunk_table_bytes(count);
    if (count > 0 && rans_keeps(table + coded, info[i].raw_len)) {
      info[i] = SectionInfo{SectionMode::RansChunks, uint32_t(table + coded), info[i].raw_len, 0};
      std::vector<uint32_t> lengths(count);
      for (size_t j = first[i]; j < first[i + 1]; j++) lengths[j - first[i]] = uint32_t(jobs[j].cap - start[j]);
      std::vector<uint8_t>& p = payloads[i];
      p.resize(table);
      rans_write_chunk_table(chunk_rows[i], lengths.data(), count, p.data());
      out_len[i] = coded;
    } else {
      out_len[i] = info[i].raw_len;
    }
    out_at[i] = out_bytes;
    out_bytes += out_len[i];
  }
  DeviceArray<uint8_t> packed(out_bytes, st);
  std::vector<CopyJob> copies;
  for (size_t i = 0; i < n; i++) {
    uint8_t* dst = packed.get() + out_at[i];
    if (info[i].mode == SectionMode::Stored) {
      add_copy(copies, secs[i].rows, dst, out_len[i]);
      continue;
    }
    for (size_t j = first[i]; j < first[i + 1]; j++) {
      const uint64_t len = jobs[j].cap - start[j];
      add_copy(copies, jobs[j].slot + start[j], dst, len);
      dst += len;
    }
  }
  auto d_copies = upload_array(copies, st);
  check_launch(launch_copy_jobs(d_copies->get(), uint32_t(copies.size()), st.get()), "payload packing");
  std::vector<uint8_t> all(out_bytes);
  packed.download(all.data(), all.size());
  st.sync();
  for (size_t i = 0; i < n; i++)
    payloads[i].insert(payloads[i].end(), all.begin() + ptrdiff_t(out_at[i]), all.begin() + ptrdiff_t(out_at[i] + out_len[i]));
  return payloads;
}

// layers: 2 * L device pointers, keys then values.
std::vector<uint8_t> encode_core(const Profile& pr, const std::vector<const void*>& layer_ptrs, uint32_t n,
                                 DType dtype, const int32_t* positions, const EncodeOptions& opts, const Stream& st) {
  const std::shared_ptr<const GpuProfile> gp = gpu_profile(pr);
  const uint32_t L = pr.layers;
  const size_t rb = size_t(pr.row_values()) * dtype_bytes(dtype);
  BlobHeader h = make_header(pr, n, dtype, positions, sinks_of(pr, opts), window_of(pr, opts));
  auto d_layers = upload_array(layer_ptrs, st);

  // Escapes: the same test as the CPU codec, one block per middle token.
  const uint32_t middle = n - h.sinks - h.window;
  if (middle > 0) {
    std::vector<uint32_t> groups;
    std::vector<double> norms;
    for (uint32_t s = 0; s < 2; s++)
      for (const StreamGroup& g : pr.groups[s]) {
        groups.insert(groups.end(), {s, g.layer_start, g.layer_count});
        norms.push_back(mean_norm(g));
      }
    auto d_groups = upload_array(groups, st);
    auto d_norms = upload_array(norms, st);
    DeviceArray<uint8_t> flags(middle, st);
    check_launch(launch_scan_escapes(d_layers->get(), kernel_layout(pr, dtype, false), h.sinks, middle,
                                     d_groups->get(), d_norms->get(), uint32_t(norms.size()), kMaxCoefficient,
                                     flags.get(), st.get()),
                 "escape scan");
    std::vector<uint8_t> flag(middle);
    flags.download(flag.data(), middle);
    st.sync();
    for (uint32_t i = 0; i < middle; i++)
      if (flag[i]) h.escapes.push_back(h.sinks + i);
  }
  const std::vector<uint32_t> coded = coded_tokens(n, h.sinks, h.window, h.escapes);
  const std::vector<uint32_t> raw = raw_tokens(h);
  const uint32_t nc = uint32_t(coded.size());

  // Raw tokens: gathered on the device now, copied back once the coded sections are queued.
  std::vector<std::vector<uint8_t>> payloads(1);
  payloads[0].resize(raw.size() * rb * 2 * L);
  auto d_raw = upload_array(raw, st);
  DeviceArray<uint8_t> d_sec(payloads[0].size(), st);
  check_launch(launch_copy_raw(const_cast<void* const*>(d_layers->get()), L, uint32_t(rb), d_raw->get(),
                               uint32_t(raw.size()), d_sec.get(), true, st.get()),
               "raw token gather");
  h.sections.push_back({SectionMode::Stored, uint32_t(payloads[0].size()), uint32_t(payloads[0].size()), 0});

  std::vector<int32_t> pos(nc);
  for (uint32_t i = 0; i < nc; i++) pos[i] = positions ? positions[coded[i]] : int32_t(coded[i]);
  auto d_coded = upload_array(coded, st);
  const Angles ang = rope_angles_of(pr, *gp, pos, st);
  const Angles none;
  std::vector<size_t> rows_at;
  size_t rows_bytes = 0;
  for (int s = 0; s < 2; s++)
    for (const StreamGroup& g : pr.groups[s]) {
      rows_at.push_back(rows_bytes);
      rows_bytes += size_t(nc) * g.row.rowBytes;
    }
  DeviceArray<uint8_t> rows(rows_bytes, st);
  std::vector<CodedSection> secs;
  for (int s = 0; s < 2; s++) {
    const KernelLayout lay = kernel_layout(pr, dtype, s == 0);
    for (size_t gi = 0; gi < pr.groups[s].size(); gi++) {
      const CodedSection sec{&pr.groups[s][gi], gp->groups[s][gi].get(), rows.get() + rows_at[secs.size()]};
      quantize_section(*sec.g, *sec.gc, lay, d_layers->get() + size_t(s) * L, *d_coded, nc, s == 0 ? ang : none,
                       sec.rows, st);
      secs.push_back(sec);
    }
  }
  d_sec.download(payloads[0].data(), payloads[0].size());
  std::vector<SectionInfo> info;
  std::vector<std::vector<uint8_t>> coded_payloads;
  try {
    coded_payloads = finish_sections(secs, nc, opts.entropy, info, st);
  } catch (...) {
    cudaStreamSynchronize(st.get());  // the download above must land before payloads goes
    throw;
  }
  for (size_t i = 0; i < secs.size(); i++) {
    h.sections.push_back(info[i]);
    payloads.push_back(std::move(coded_payloads[i]));
  }
  return seal_blob(h, payloads);
}

void decode_core(const Profile& pr, const uint8_t* blob, const BlobHeader& h, const std::vector<void*>& out_layers,
                 int32_t* positions, const Stream& st) {
  check_blob(pr, h);
  const std::shared_ptr<const GpuProfile> gp = gpu_profile(pr);
  const uint32_t n = h.tokens, L = pr.layers;
  const size_t rb = size_t(pr.row_values()) * dtype_bytes(h.dtype);
  for (uint32_t t = 0; t < n; t++) positions[t] = h.contiguous ? int32_t(int64_t(h.pos_start) + t) : h.positions[t];

  DeviceArray<uint8_t> d_blob(h.total_len, st);
  d_blob.upload(blob, h.total_len);
  auto d_layers = upload_array(out_layers, st);
  const std::vector<uint32_t> raw = raw_tokens(h);
  auto d_raw = upload_array(raw, st);
  check_launch(launch_copy_raw(d_layers->get(), L, uint32_t(rb), d_raw->get(), uint32_t(raw.size()),
                               d_blob.get() + h.sections[0].offset, false, st.get()),
               "raw token scatter");
  const std::vector<uint32_t> coded = coded_tokens(n, h.sinks, h.window, h.escapes);
  const uint32_t nc = uint32_t(coded.size());
  std::vector<int32_t> pos(nc);
  for (uint32_t i = 0; i < nc; i++) pos[i] = positions[coded[i]];
  auto d_coded = upload_array(coded, st);
  const Angles ang = rope_angles_of(pr, *gp, pos, st);
  const Angles none;

  // Where each section's rows come from: the blob itself (stored) or the decoded buffer.
  std::vector<const StreamGroup*> groups;
  std::vector<const GroupConsts*> consts;
  for (int s = 0; s < 2; s++)
    for (size_t gi = 0; gi < pr.groups[s].size(); gi++) {
      groups.push_back(&pr.groups[s][gi]);
      consts.push_back(gp->groups[s][gi].get());
    }
  std::vector<size_t> decoded_at(groups.size(), 0);
  size_t decoded_bytes = 0;
  for (size_t i = 0; i < groups.size(); i++)
    if (entropy_coded(h.sections[i + 1].mode)) {
      decoded_at[i] = decoded_bytes;
      decoded_bytes += size_t(nc) * groups[i]->row.rowBytes;
    }
  DeviceArray<uint8_t> decoded(decoded_bytes, st);

  // Entropy decoding of every chunk of every section in one launch. Chunk tables are validated
  // on the host copy of the blob before any kernel reads a stream.
  std::vector<RansDecodeJob> jobs;
  for (size_t i = 0; i < groups.size(); i++) {
    const SectionInfo& sec = h.sections[i + 1];
    const uint32_t rbytes = groups[i]->row.rowBytes;
    uint8_t* out = decoded.get() + decoded_at[i];
    const uint16_t* ctx = consts[i]->context.get();
    const RansTable* tables = consts[i]->tables.get();
    if (sec.mode == SectionMode::Rans) {  // version 1: one stream for the whole section
      jobs.push_back(RansDecodeJob{d_blob.get() + sec.offset, sec.stored_len, out, uint64_t(nc) * rbytes, ctx, tables, rbytes});
    } else if (sec.mode == SectionMode::RansChunks) {
      const RansChunks ch = rans_parse_chunks(blob + sec.offset, sec.stored_len, nc);
      for (size_t c = 0; c + 1 < ch.offset.size(); c++) {
        const uint32_t r0 = uint32_t(c) * ch.chunk_rows, nr = std::min(ch.chunk_rows, nc - r0);
        jobs.push_back(RansDecodeJob{d_blob.get() + sec.offset + ch.offset[c], ch.offset[c + 1] - ch.offset[c],
                                     out + size_t(r0) * rbytes, uint64_t(nr) * rbytes, ctx, tables, rbytes});
      }
    }
  }
  auto d_jobs = upload_array(jobs, st);
  DeviceArray<int> status(jobs.size(), st);
  check_launch(launch_rans_decode(d_jobs->get(), uint32_t(jobs.size()), status.get(), st.get()), "entropy decoding");
  // Damaged streams are found before anything is decoded from them: the caller's buffers then
  // get no garbage, only the raw tokens (which are intact: the blob's checksum held).
  if (!jobs.empty()) {
    std::vector<int> stat(jobs.size());
    status.download(stat.data(), stat.size());
    st.sync();
    for (int code : stat) rans_check_status(code);
  }

  for (size_t i = 0; i < groups.size() && nc > 0; i++) {
    const StreamGroup& g = *groups[i];
    const GroupConsts& gc = *consts[i];
    const bool is_key = i < pr.groups[0].size();
    const uint32_t rbytes = g.row.rowBytes;
    const uint8_t* rows = entropy_coded(h.sections[i + 1].mode) ? decoded.get() + decoded_at[i]
                                                               : d_blob.get() + h.sections[i + 1].offset;
    const Angles& a = is_key ? ang : none;
    const uint32_t batch = std::min(batch_rows(g.p, g.k), nc);
    const uint32_t ldd = std::max(g.k, 1u);
    DeviceArray<float> X(size_t(batch) * g.p, st), D(size_t(batch) * ldd, st);
    for (uint32_t b0 = 0; b0 < nc; b0 += batch) {
      const uint32_t nb = std::min(batch, nc - b0);
      check(cudaMemsetAsync(D.get(), 0, size_t(nb) * ldd * sizeof(float), st.get()), "workspace clear");
      check_launch(launch_dequantize(rows + size_t(b0) * rbytes, nb, gc.kg, D.get(), ldd, st.get()), "dequantization");
      check_launch(launch_gemm_f32(int(nb), int(g.p), int(g.k), D.get(), int(ldd), gc.basis.get(), int(g.p), false,
                                   X.get(), int(g.p), st.get()),
                   "inverse projection");
      check_launch(launch_scatter_features(X.get(), kernel_layout(pr, h.dtype, is_key), gc.kg, d_coded->get() + b0, nb,
                                           a.cos_at(b0), a.sin_at(b0), d_layers->get() + (is_key ? 0 : size_t(L)),
                                           st.get()),
                   "feature scatter");
    }
  }
  st.sync();
}

// The per-layer buffers of a device cache of `tokens` tokens for this profile, checked.
std::vector<const void*> device_layers(const Profile& pr, const std::vector<uint64_t>& keys,
                                       const std::vector<uint64_t>& values, DType dtype, uint32_t tokens,
                                       const char* what) {
  if (keys.size() != pr.layers || values.size() != pr.layers)
    fail("E_LAYOUT", std::string(what) + " has " + std::to_string(keys.size()) + " key and " +
                         std::to_string(values.size()) + " value layers, profile expects " + std::to_string(pr.layers));
  return checked_layers(keys, values, dtype, tokens, pr.row_values(), what);
}

}  // namespace

std::vector<uint8_t> encode_device(const Profile& pr, const DeviceCacheView& c, const EncodeOptions& opts,
                                   uint64_t stream) {
  const std::vector<const void*> layers = device_layers(pr, c.keys, c.values, c.dtype, c.tokens, "cache");
  Stream st{uintptr_t(stream)};
  return encode_core(pr, layers, c.tokens, c.dtype, c.positions, opts, st);
}

std::vector<uint8_t> encode_host(const Profile& pr, const CacheView& c, const EncodeOptions& opts) {
  if (c.keys.size() != pr.layers || c.values.size() != pr.layers)
    fail("E_LAYOUT", "cache has " + std::to_string(c.keys.size()) + " layers, profile expects " +
                         std::to_string(pr.layers));
  Stream st(0);
  const size_t layer_bytes = size_t(c.tokens) * pr.row_values() * dtype_bytes(c.dtype);
  DeviceArray<uint8_t> cache(2 * size_t(pr.layers) * layer_bytes, st);
  std::vector<const void*> layers;
  for (int s = 0; s < 2; s++)
    for (uint32_t l = 0; l < pr.layers; l++) {
      uint8_t* dst = cache.get() + (size_t(s) * pr.layers + l) * layer_bytes;
      check(cudaMemcpyAsync(dst, s == 0 ? c.keys[l] : c.values[l], layer_bytes, cudaMemcpyHostToDevice, st.get()),
            "host-to-device copy");
      layers.push_back(dst);
    }
  return encode_core(pr, layers, c.tokens, c.dtype, c.positions, opts, st);
}

void decode_to_device(const Profile& pr, const uint8_t* blob, const BlobHeader& h, const std::vector<uint64_t>& keys,
                      const std::vector<uint64_t>& values, int32_t* positions, uint64_t stream) {
  const std::vector<const void*> layers = device_layers(pr, keys, values, h.dtype, h.tokens, "target");
  std::vector<void*> out;
  for (const void* p : layers) out.push_back(const_cast<void*>(p));
  Stream st{uintptr_t(stream)};
  decode_core(pr, blob, h, out, positions, st);
}

void decode_to_host(const Profile& pr, const uint8_t* blob, const BlobHeader& h, void* keys, void* values,
                    int32_t* positions) {
  const size_t bytes = check_blob(pr, h);  // per stream, all layers
  const size_t layer_bytes = bytes / pr.layers;
  Stream st(0);
  DeviceArray<uint8_t> cache(2 * bytes, st);
  std::vector<void*> out;
  for (int s = 0; s < 2; s++)
    for (uint32_t l = 0; l < pr.layers; l++) out.push_back(cache.get() + size_t(s) * bytes + size_t(l) * layer_bytes);
  decode_core(pr, blob, h, out, positions, st);
  cache.download(static_cast<uint8_t*>(keys), bytes);
  check(cudaMemcpyAsync(values, cache.get() + bytes, bytes, cudaMemcpyDeviceToHost, st.get()), "device-to-host copy");
  st.sync();
}

}  // namespace kvtc::gpu
