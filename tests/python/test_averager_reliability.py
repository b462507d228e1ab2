"""torch.classes.asymvalley.Averager and the counter of the update ops under careless use.

Every case runs in its own Python process (a read of uninitialized memory or a race may crash
rather than raise), prints one JSON line, and the test checks: the process survived, the
exception type, that the message names the argument, and that no byte of any tensor (average,
params, counter) changed. The oracles are closed forms (the mean of the fed values) and the
sequential run of the same updates.
"""
import json
import subprocess
import sys
import textwrap

import pytest

PRELUDE = textwrap.dedent("""
    import json, threading
    import torch
    import asymvalley  # loads the op library
    A = torch.classes.asymvalley.Averager
    OPS = torch.ops.asymvalley
    Q = "__torch__.torch.classes.asymvalley.Averager"

    def snap(ts):
        return [t.detach().clone().reshape(-1).contiguous().view(torch.uint8).tolist() for t in ts]

    def attempt(fn):
        try:
            fn()
        except Exception as e:
            return {"type": type(e).__name__, "msg": str(e)}
        return {"type": None, "msg": ""}

    def unpickle(state):
        o = torch.ScriptObject.__new__(torch.ScriptObject)
        o.__setstate__((state, Q))
        return o
""")


def run(body, timeout=120):
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"process died (rc={proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def refused(r, *parts):
    assert r["type"] == "RuntimeError", r
    for p in parts:
        assert p in r["msg"], (p, r["msg"])


# --- finding 1: no read of an average that was never written --------------------------------

READS = ["copy_to", "swap", "average"]


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("setup", ["fresh", "swa_skipped", "failed_first_update"])
def test_reading_an_unwritten_average_is_refused_and_changes_nothing(setup, read):
    r = run(f"""
        setup, read = {setup!r}, {read!r}
        a = A("swa", 0.9, "none", 1.0, 0.75, 0.0, 2 if setup == "swa_skipped" else 0, 1)
        if setup == "swa_skipped":
            a.update([torch.randn(3, 2)])          # step 0 < update_after_step: allocates, skips
        elif setup == "failed_first_update":
            attempt(lambda: a.update([torch.ones(3, 2, dtype=torch.int64)]))  # refused dtype
        model = [torch.full((3, 2), 7.0)]
        before = snap(model)
        out = attempt(lambda: a.copy_to(model) if read == "copy_to" else
                      a.swap(model) if read == "swap" else a.average())
        out["unchanged"] = snap(model) == before
        out["counters"] = [a.steps(), a.n_averaged()]
        print(json.dumps(out))
    """)
    refused(r, f"Averager.{read}", "no average yet")
    assert r["unchanged"]
    assert r["counters"] == ([1, 0] if setup == "swa_skipped" else [0, 0])


def test_first_real_update_after_skips_makes_the_average_readable():
    r = run("""
        a = A("swa", 0.9, "none", 1.0, 0.75, 0.0, 2, 1)
        for v in [100.0, 200.0, 1.0, 2.0, 6.0]:   # the first two are skipped
            a.update([torch.full((4,), v)])
        model = [torch.zeros(4)]
        a.copy_to(model)
        print(json.dumps({"avg": model[0].tolist(), "n": a.n_averaged()}))
    """)
    assert r["n"] == 3 and r["avg"] == pytest.approx([3.0] * 4, rel=1e-6)  # mean(1, 2, 6)


@pytest.mark.parametrize("case", ["empty_layout_counted", "empty_layout_ema_mirrored",
                                  "negative_n", "n_exceeds_steps"])
def test_inconsistent_pickled_state_is_refused(case):
    r = run(f"""
        case = {case!r}
        cfg = [0.9, 1.0, 0.75, 0.0]
        st = {{
            "empty_layout_counted": ("swa", "none", cfg, [1, 0, 1, 3, 3], [], []),
            "empty_layout_ema_mirrored": ("ema", "none", cfg, [1, 5, 1, 2, 0], [], []),
            "negative_n": ("swa", "none", cfg, [1, 0, 1, 1, -1], [torch.ones(3)], [0, 1, 3]),
            "n_exceeds_steps": ("swa", "none", cfg, [1, 0, 1, 1, 4], [torch.ones(3)], [0, 1, 3]),
        }}[case]
        print(json.dumps(attempt(lambda: unpickle(st))))
    """)
    refused(r, "n_averaged")


def test_consistent_pickles_load_and_keep_their_filled_state():
    r = run("""
        import pickle
        out = {}
        # SWA that only skipped: loads, still refuses reads.
        a = A("swa", 0.9, "none", 1.0, 0.75, 0.0, 3, 1)
        a.update([torch.randn(2)])
        b = pickle.loads(pickle.dumps(a))
        out["swa_skipped"] = attempt(lambda: b.average())["type"]
        # EMA that only mirrored (n_averaged = 0 but written): loads readable, same values.
        a = A("ema", 0.9, "none", 1.0, 0.75, 0.0, 3, 1)
        p = [torch.randn(5)]
        a.update(p)
        b = pickle.loads(pickle.dumps(a))
        out["ema_mirror"] = torch.equal(b.average()[0], p[0])
        # A state tuple written by the class before the flag existed (same format).
        c = unpickle(("swa", "none", [0.9, 1.0, 0.75, 0.0], [1, 0, 1, 2, 2], [torch.arange(3.0)], [0, 1, 3]))
        out["old"] = c.average()[0].tolist()
        print(json.dumps(out))
    """)
    assert r == {"swa_skipped": "RuntimeError", "ema_mirror": True, "old": [0.0, 1.0, 2.0]}


# --- finding 2: threads ---------------------------------------------------------------------

@pytest.mark.parametrize("trial", range(3))
def test_four_threads_sharing_one_averager_match_the_sequential_mean(trial):
    r = run(f"""
        trial = {trial}
        shapes = [(64, 33), (129,), (7, 5, 3)]
        g = torch.Generator().manual_seed(trial)
        feeds = [[[torch.randn(s, generator=g) for s in shapes] for _ in range(25)] for _ in range(4)]
        shared = A("swa", 0.9, "none", 1.0, 0.75, 0.0, 0, 1)
        gate = threading.Barrier(4)
        errors = []
        def work(k):
            gate.wait()                              # first updates at the same moment
            try:
                for p in feeds[k]:
                    shared.update(p)
                    shared.average()
            except Exception as e:
                errors.append(repr(e))
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        [t.start() for t in threads]; [t.join() for t in threads]
        flat = [p for f in feeds for p in f]
        mean = [torch.stack([p[i] for p in flat]).double().mean(0) for i in range(len(shapes))]
        seq = A("swa", 0.9, "none", 1.0, 0.75, 0.0, 0, 1)
        for p in flat:
            seq.update(p)
        dev_shared = max(float((a.double() - m).abs().max()) for a, m in zip(shared.average(), mean))
        dev_seq = max(float((a.double() - m).abs().max()) for a, m in zip(seq.average(), mean))
        print(json.dumps({{"errors": errors, "n": shared.n_averaged(), "steps": shared.steps(),
                          "dev_shared": dev_shared, "dev_seq": dev_seq}}))
    """)
    assert r["errors"] == [] and r["n"] == 100 and r["steps"] == 100
    # Order changes only float32 rounding: 100 lerps of O(1) values stay within ~1e-5 of the
    # float64 mean, whatever the interleaving (the sequential run is the reference bound).
    assert r["dev_seq"] < 1e-5 and r["dev_shared"] < 1e-5


# --- finding 4: counters of the update ops --------------------------------------------------

@pytest.mark.parametrize("op", ["swa", "ema"])
@pytest.mark.parametrize("counter", ["torch.tensor(3, dtype=torch.uint8)", "torch.tensor(3, dtype=torch.int8)",
                                     "torch.tensor(3, dtype=torch.int32)", "torch.tensor(-1)",
                                     "torch.tensor(-5)"])
def test_narrow_or_negative_counters_are_refused_and_change_nothing(op, counter):
    r = run(f"""
        avg, params = [torch.randn(4, 3), torch.randn(5)], [torch.randn(4, 3), torch.randn(5)]
        n = {counter}
        before = snap(avg + params + [n])
        call = (lambda: OPS.swa_update_(avg, params, n)) if {op!r} == "swa" else \\
               (lambda: OPS.ema_update_(avg, params, n, 0.9))
        out = attempt(call)
        out["unchanged"] = snap(avg + params + [n]) == before
        print(json.dumps(out))
    """)
    expected = "torch.int64" if "dtype" in counter else "integer >= 0"
    refused(r, "n_averaged", f"{op}_update_", expected)
    assert r["unchanged"]


def test_int64_counter_averages_past_255():
    # The wrap of a uint8 counter showed here: the mean of 0..299 must be 149.5.
    r = run("""
        avg, n = [torch.zeros(2, dtype=torch.float64)], torch.tensor(0)
        for v in range(300):
            OPS.swa_update_(avg, [torch.full((2,), float(v), dtype=torch.float64)], n)
        print(json.dumps({"avg": avg[0].tolist(), "n": int(n)}))
    """)
    assert r["n"] == 300 and r["avg"] == pytest.approx([149.5, 149.5], rel=1e-12)


# --- finding 9: narrowing -------------------------------------------------------------------

@pytest.mark.parametrize("first", [True, False])
def test_float64_params_into_the_float32_average_are_refused(first):
    r = run(f"""
        a = A("swa", 0.9, "none", 1.0, 0.75, 0.0, 0, 1)
        if not {first}:
            a.update([torch.ones(3), torch.ones(2)])
        before = None if {first} else snap(a.average())
        params = [torch.ones(3), torch.full((2,), 1.0 + 1e-12, dtype=torch.float64)]
        out = attempt(lambda: a.update(params))
        out["counters"] = [a.steps(), a.n_averaged()]
        out["unchanged"] = {first} or snap(a.average()) == before
        out["still_empty"] = attempt(lambda: a.average())["type"] if {first} else None
        print(json.dumps(out))
    """)
    refused(r, "params[1]", "torch.float64", "torch.float32")
    assert r["unchanged"]
    assert r["counters"] == ([0, 0] if first else [1, 1])
    if first:
        assert r["still_empty"] == "RuntimeError"
