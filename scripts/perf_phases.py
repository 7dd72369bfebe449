#!/usr/bin/env python3
# Groups `perf script -F tid,time,ip,sym,dso` samples of an epwa run by forward phase and by thread
# (docs/history/PERF-issue9.md, "Profiles"). Usage: perf script -i F -F tid,time,ip,sym,dso | scripts/perf_phases.py [T0 [T1]]
# keeps samples with T0 <= time <= T1 (seconds, as perf prints them), e.g. the timed window after the load.
import sys, re, collections
CATS = [
 ('load/probe', r'clear_page|sum_avx2|page_fault|folio|filemap|set_pte|handle_mm|unmap_page|lruvec|memcg|__memmove|copy_|zap_|free_unref|LargeBuffer|load_gguf|madvise|do_anonymous|alloc_pages|get_page|rmqueue|lru_'),
 ('quant kernel (decode)', r'one_row|dot_grouped<|dot_k_affine<|dot_q6_k<|dot_float<|vec_dot_rows$|linear_rows|dtype_bytes|row_dot$|best_isa|vec_dot_rows\b'),
 ('activation repack (prompt gemm)', r'repack'),
 ('quant kernel (prompt gemm)', r'gemm|dot_grouped_v|tile|vec_dot_rows_multi'),
 ('float matmul', r'matmul|micro|panel|matvec'),
 ('attention', r'attention_head|dot_f32|softmax|expf|__exp'),
 ('activation packing', r'pack_q8|PackedVector::pack|LinearInput::prepare'),
 ('router/top-k', r'select_topk'),
 ('rmsnorm/rope/swiglu/residual', r'rmsnorm|RopeTable|swiglu|rope'),
 ('thread pool (spin/wait/claim)', r'worker_loop|ThreadPool::run|State::work|sched_yield|futex|schedule|finish_task_switch|__x64_sys|syscall|entry_SYSCALL|do_syscall|_raw_spin|pick_next|yield|__schedule|try_to_wake|update_curr|native_queued|hrtimer|ttwu|enqueue|dequeue'),
 ('pool job trampoline/moe glue', r'_FUN|moe_one_token|run_one_token|linear_tasks|Model::forward|check_linear|InputSet'),
 ('sampler/argmax/logits', r'Sampler|argmax|generate|memset|malloc|free|_int_|operator new|operator delete'),
]
cre = [(n, re.compile(p)) for n, p in CATS]
tot = collections.Counter(); per = collections.defaultdict(collections.Counter); other = collections.Counter()
t0 = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
t1 = float(sys.argv[2]) if len(sys.argv) > 2 else 1e18
for line in sys.stdin:
    m = re.match(r'\s*(\d+)\s+([\d.]+):\s+(\S+)\s+(.*?)\s+\((.*)\)\s*$', line)
    if not m: continue
    tid, t, ip, sym, dso = m.groups(); t = float(t)
    if t < t0 or t > t1: continue
    c = 'other'
    for n, r in cre:
        if r.search(sym): c = n; break
    if c == 'other': other[sym] += 1
    tot[c] += 1; per[tid][c] += 1
N = sum(tot.values())
print(f'samples {N}')
for c, v in tot.most_common(): print(f'{100*v/N:6.2f}%  {c}')
print('-- per thread (samples by category)')
for tid, cc in per.items():
    s = sum(cc.values()); print(tid, s, ', '.join(f'{k} {100*v/s:.1f}%' for k, v in cc.most_common(6)))
print('-- top other'); 
for s, v in other.most_common(12): print(f'{100*v/N:6.2f}% {s[:120]}')
