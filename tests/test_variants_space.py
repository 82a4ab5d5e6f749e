"""The variant space: generation, pruning by device limits and reasons, and the search strategies."""

from __future__ import annotations

import dataclasses
import math

import pytest
from click.testing import CliRunner

from dnprof.cli import main
from dnprof.variants.chunk_config import ChunkConfig
from dnprof.variants.limits import PROFILES, DeviceLimits, device_limits
from dnprof.variants.search import (Budget, RoundPlan, initial_set, parse_budget, planned_measurements, run_rounds)
from dnprof.variants.space import RULE_NOTES, Candidate, chunk_regs_per_thread, chunk_smem_bytes, generate_space


def _raw_size() -> int:
    """Every combination of the choices, the separate output kernel's fields enumerated only where the
    output is not fused (elsewhere they keep their defaults)."""
    space = ChunkConfig.choices()
    out = math.prod(len(space[n]) for n in ChunkConfig.SEPARATE_OUTPUT_FIELDS)
    rest = math.prod(len(v) for n, v in space.items() if n not in ChunkConfig.SEPARATE_OUTPUT_FIELDS)
    fused = sum(space["fuse_output"]) / len(space["fuse_output"])
    return round(rest * (fused + (1 - fused) * out))


def test_space_sizes_and_reasons_add_up():
    space = generate_space(256, 256, "bf16", PROFILES["h100"], ("chunk",))
    assert space.total == _raw_size()
    assert len(space.kept) + len(space.pruned) == space.total
    reasons = space.reasons()
    assert set(reasons) <= set(RULE_NOTES)
    assert reasons["invalid"] > 0 and reasons["shared-memory"] > 0 and reasons["registers"] > 0
    for cand in space.kept:  # nothing kept is over the limits
        assert chunk_smem_bytes(cand.config, 256, 256, "bf16") <= PROFILES["h100"].smem_per_block
        cand.config.validate(256, 256)
    assert space.defaults["chunk"] in space.kept


def test_a100_gets_a_smaller_space_than_h100():
    h100 = generate_space(256, 256, "bf16", PROFILES["h100"], ("chunk",))
    a100 = generate_space(256, 256, "bf16", PROFILES["a100"], ("chunk",))
    faults_h100 = {p.candidate for p in h100.pruned if p.rule == "known-fault"}
    assert len(a100.kept) < len(h100.kept) + len(faults_h100)  # less shared memory, not counting sm_90's faults
    assert a100.reasons()["shared-memory"] > h100.reasons()["shared-memory"]
    from dnprof.variants.known_faults import sm90_wrong_values

    assert faults_h100 and all(c.config.num_stages == 1 and (c.config.BV <= 32 and c.config.chunk_size <= 64
                                                             or c.config.chunk_size == 128)
                               or sm90_wrong_values(c.config, 256, backward=True) for c in faults_h100)
    assert set(a100.kept) <= set(h100.kept) | faults_h100  # sm_90's known faults are not cut on sm_80
    assert "known-fault" not in a100.reasons()
    assert "hopper-warps8" in h100.flags and "hopper-warps8" not in a100.flags  # a flag, not a cut


def test_less_shared_memory_prunes_more_by_the_estimator():
    small = DeviceLimits("tiny", "8.0", 10, 64 * 1024, 65536, source="test")
    space = generate_space(64, 64, "fp16", small, ("chunk",))
    assert all(chunk_smem_bytes(c.config, 64, 64, "fp16") <= 64 * 1024 for c in space.kept)
    assert all(chunk_regs_per_thread(c.config, 64, 64) <= 255 for c in space.kept)


def test_interpreter_profile_prunes_nothing_by_resources_and_fwd_dedups():
    fwdbwd = generate_space(16, 16, "fp32", device_limits(device="cpu"), ("chunk",), mode="fwdbwd")
    assert set(fwdbwd.reasons()) == {"invalid", "duplicate"}  # fp32 inputs: 16-bit dot operands are a no-op
    assert all(c.config.dot_operands == "fp32" for c in fwdbwd.kept)
    fp16 = generate_space(16, 16, "fp16", device_limits(device="cpu"), ("chunk",), mode="fwdbwd")
    assert set(fp16.reasons()) == {"invalid", "duplicate"} and {c.config.dot_operands for c in fp16.kept} == {"fp32", "input"}
    # with a backward every chunk's state is stored, so output_chunk is the only duplicate there
    assert {p.candidate.config.output_chunk for p in fp16.pruned if p.rule == "duplicate"} == {128}
    assert {c.config.output_chunk for c in fwdbwd.kept} == {0}
    fwd = generate_space(16, 16, "fp32", device_limits(device="cpu"), ("chunk",), mode="fwd")
    assert fwd.reasons()["duplicate"] > 0
    # a forward alone keeps the coarser output chunk, only where the output is not fused
    wide = [c.config for c in fwd.kept if c.config.output_chunk]
    assert wide and not any(c.fuse_output for c in wide) and all(c.output_chunk == 128 > c.chunk_size for c in wide)
    assert len(fwd.kept) - len(wide) < len(fwdbwd.kept)


def test_chunk_sizes_and_recurrent_family():
    space = generate_space(32, 32, "fp16", PROFILES["h100"], ("chunk", "recurrent"), chunk_sizes=[16, 32])
    assert {c.config.chunk_size for c in space.kept_of("chunk")} == {16, 32}
    assert space.kept_of("recurrent")
    with pytest.raises(ValueError, match="chunk size"):
        generate_space(32, 32, "fp16", PROFILES["h100"], ("chunk",), chunk_sizes=[48])


def test_prior_order_starts_with_the_default_and_is_seeded():
    space = generate_space(64, 64, "bf16", PROFILES["h100"], ("chunk",))
    a, b = space.ordered("chunk", seed=1), space.ordered("chunk", seed=1)
    assert a == b and a[0] == space.defaults["chunk"]
    assert sorted(map(str, a), key=str) == sorted(map(str, space.kept_of("chunk")), key=str)


def test_parse_budget():
    assert parse_budget("48") == Budget(48, None)
    assert parse_budget("300s") == Budget(None, 300.0)
    assert parse_budget("5m") == Budget(None, 300.0)
    assert parse_budget("48,240s") == Budget(48, 240.0)
    assert parse_budget(None) == Budget()
    for bad in ("x", "0", "1.5", "-3s"):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)


def test_halving_keeps_the_best_under_a_fake_timer():
    true_ms = {f"c{i}": 1.0 + i * 0.1 for i in range(9)}
    calls = []

    def measure(cand, round_, rep):
        calls.append((cand, round_, rep))
        return true_ms[cand]

    res = run_rounds("halving", list(true_ms)[::-1], measure, default="c8", plan=RoundPlan(10, 1000, 100))
    best, rnd, ms = res.ranking()[0]
    assert best == "c0" and ms == 1.0
    assert rnd == max(r for _, r, _ in calls)
    reps = {r: rep for _, r, rep in calls}
    assert reps[1] == 2 * reps[0]  # each round times longer
    assert sum(1 for c, _, _ in calls if c == "c8") == res.rounds  # the default is pinned into every round
    assert len(calls) <= planned_measurements("halving", 9)


def test_halving_drops_failures_and_stops_when_out_of_time():
    res = run_rounds("halving", ["a", "b", "c"], lambda c, r, rep: None if c == "a" else {"b": 2.0, "c": 1.0}[c])
    assert res.ranking()[0][0] == "c" and "a" in res.failed
    n = {"k": 0}

    def out_of_time():
        n["k"] += 1
        return n["k"] > 2

    res = run_rounds("exhaustive", ["a", "b", "c", "d"], lambda c, r, rep: 1.0, out_of_time=out_of_time)
    assert res.stopped == "time budget" and len(res.measured) == 2


def test_random_respects_the_budget_and_includes_the_default():
    pool = [f"c{i}" for i in range(50)]
    chosen = initial_set("random", pool, Budget(7), default="c30", seed=3)
    assert len(chosen) == 7 and len(set(chosen)) == 7 and "c30" in chosen
    assert chosen == initial_set("random", pool, Budget(7), default="c30", seed=3)
    assert initial_set("exhaustive", pool, Budget(5)) == pool[:5]
    assert len(initial_set("exhaustive", pool, Budget())) == 50
    with pytest.raises(ValueError):
        initial_set("grid", pool, Budget())


def test_cli_list_works_without_a_gpu():
    out = CliRunner().invoke(main, ["tune", "--list", "--head-dim", "256", "--device-profile", "a100"])
    assert out.exit_code == 0, out.output
    for word in ("generated", "kept", "shared-memory", "registers", "invalid", "A100"):
        assert word in out.output
    out = CliRunner().invoke(main, ["tune", "--list", "--head-dim", "512"])
    assert out.exit_code == 2 and "not supported" in out.output


def test_cli_list_names_the_shape_and_what_the_guard_refuses_there():
    """``--list`` generates the space for the shape it would tune (B x H streams) and shows the refused rule."""
    args = ["tune", "--list", "--head-dim", "256", "--mode", "fwd", "--chunk-size", "64", "--device-profile", "h200"]
    long = CliRunner().invoke(main, [*args, "--seq-len", "16384"], terminal_width=250)
    assert long.exit_code == 0, long.output
    assert "at 16 (sequence, head) streams" in long.output and "refused" in long.output
    short = CliRunner().invoke(main, [*args, "--seq-len", "4096"], terminal_width=250)
    assert "at 64 (sequence, head) streams" in short.output


def test_forward_space_keeps_and_leads_with_the_fused_forward_default():
    space = generate_space(128, 128, "bf16", PROFILES["h100"], ("chunk",), mode="fwd")
    default = space.defaults["chunk"]
    assert default.config.fuse_output and default in space.kept
    assert space.ordered("chunk")[0] == default


def test_chunk_128_at_one_stage_is_a_known_fault_on_sm90_only():
    from dnprof.variants.limits import PROFILES
    from dnprof.variants.space import generate_space

    for profile, cut in (("h200", True), ("a100", False)):
        space = generate_space(128, 128, "bf16", PROFILES[profile], ("chunk",), chunk_sizes=[128])
        one_stage = [p for p in space.pruned if p.candidate is not None and p.candidate.config.num_stages == 1]
        faults = [p for p in one_stage if p.rule == "known-fault"]
        kept_one_stage = [c for c in space.kept if c.config.num_stages == 1]
        if cut:
            assert faults and not kept_one_stage
            assert "WY transform at chunk size 128" in faults[0].detail
        else:
            assert not faults and kept_one_stage


def test_fusing_the_output_is_one_knob_from_the_default_in_a_forward_search():
    """In a forward-only space the fused-output variants keep one state dtype (the other is a duplicate), so
    the default's fused twin differs in two fields; the search still explores it among the first neighbours."""
    space = generate_space(256, 256, "bf16", PROFILES["h200"], ("chunk",), mode="fwd", chunk_sizes=[64])
    default = ChunkConfig.default_for(256, 256, 64, "bf16", "fwd")
    assert not default.fuse_output and default.state_dtype == "bf16"
    names = [c.config.name for c in space.ordered("chunk")]
    twin = dataclasses.replace(default, fuse_output=True, state_dtype="fp32").name
    assert names[0] == default.name
    assert twin in names[:16]


def test_space_reuses_validate_verdicts_only_where_they_cannot_differ():
    """The space reuses ``validate``'s verdict across ``ChunkConfig.VALIDATE_IGNORES``; checking every
    combination itself gives the same kept set and the same invalid reasons."""
    import itertools

    from dnprof.variants.chunk_config import ConfigError

    for K in (64, 256):
        space = generate_space(K, K, "bf16", PROFILES["h100"], ("chunk",), mode="fwd", chunk_sizes=[64])
        invalid = {tuple(sorted(p.raw.items())): p.detail for p in space.pruned if p.rule == "invalid"}
        choices = dict(ChunkConfig.choices(), chunk_size=(64,))
        names = list(choices)
        for values in itertools.product(*choices.values()):
            raw = dict(zip(names, values))
            if raw["fuse_output"] and any(raw[n] != ChunkConfig.__dataclass_fields__[n].default
                                          for n in ChunkConfig.SEPARATE_OUTPUT_FIELDS):
                continue  # not enumerated: these fields keep their defaults where the output is fused
            try:
                ChunkConfig(**raw).validate(K, K)
            except ConfigError as exc:
                assert invalid.pop(tuple(sorted(raw.items()))) == str(exc)
        assert not invalid  # nothing the space calls invalid is valid


def test_a_space_for_a_shape_cuts_what_the_launch_guard_refuses_there():
    """Generated for a shape, the space cuts a variant the launch guard would refuse at that many (sequence,
    head) streams (rule ``refused``, with the guard's reason): at D = 256 and 16 streams ``auto`` tiles the
    forward loop at BV 32, where ``wy_in_loop`` is refused on sm_90; at 64 streams it tiles at BV 64 and the
    same variant stays. Without a shape, or on an architecture with no such rule, nothing is cut for it."""
    from dnprof.kernels.chunk import plan_launch
    from dnprof.variants.errors import RefusedOnDevice

    wyx = dataclasses.replace(ChunkConfig.default_for(256, 256, 64, "bf16", "fwd"), wy_in_loop=True, tma=False)

    def verdict(space):
        if wyx.name in {c.name for c in space.kept}:
            return "kept"
        return next(p for p in space.pruned if p.candidate is not None and p.candidate.name == wyx.name)

    def space_at(n_streams, profile="h200"):
        return generate_space(256, 256, "bf16", PROFILES[profile], ("chunk",), mode="fwd", chunk_sizes=[64],
                              n_streams=n_streams)

    cut = verdict(space_at(16))
    assert cut.rule == "refused" and "at 16 (sequence, head) streams" in cut.detail and "BV 32" in cut.detail
    with pytest.raises(RefusedOnDevice):  # the same verdict as the guard that runs before every launch
        plan_launch(wyx, 256, 256, 16, 132, 9, save=False)
    assert verdict(space_at(64)) == "kept"
    assert verdict(space_at(None)) == "kept"
    assert verdict(space_at(16, "a100")) == "kept"
    assert "refused" not in space_at(None).reasons()
    # the rule names every refused variant, and none of them is among the kept ones
    refused = [p.candidate.name for p in space_at(16).pruned if p.rule == "refused"]
    assert refused and all("-wyx-" in name or "-s1-" in name for name in refused)


def test_a_space_for_a_shape_keeps_one_of_two_variants_that_tma_does_not_change():
    """At D = 256, T = 4096 (64 streams) a forward with the output fused holds its loop transposed under
    ``auto``, which ``tma`` does not touch: the space for that shape keeps the variant without it and
    names the other a duplicate; with the states stored (slab loops) both stay, and so do both without
    a shape."""
    fused = dataclasses.replace(ChunkConfig.default_for(256, 256, 64, "bf16", "fwd"), fuse_output=True,
                                state_dtype="fp32")
    assert fused.tma

    def names(space):
        return {c.name for c in space.kept}

    at = generate_space(256, 256, "bf16", PROFILES["h200"], ("chunk",), mode="fwd", chunk_sizes=[64], n_streams=64)
    plain = dataclasses.replace(fused, tma=False)
    assert plain.name in names(at) and fused.name not in names(at)
    why = next(p for p in at.pruned if p.candidate is not None and p.candidate.name == fused.name)
    assert why.rule == "duplicate" and "transposed" in why.detail
    slabs = ChunkConfig.default_for(256, 256, 64, "bf16", "fwd")
    assert {slabs.name, dataclasses.replace(slabs, tma=False).name} <= names(at)
    free = generate_space(256, 256, "bf16", PROFILES["h200"], ("chunk",), mode="fwd", chunk_sizes=[64])
    assert {fused.name, plain.name} <= names(free)


def test_a_default_pruned_as_a_duplicate_stays_the_reference_through_its_kept_twin():
    """At D = 128, T = 8192 (64 streams) the forward's default loads through tensor descriptors a loop that
    ``auto`` holds transposed, so the space keeps only its twin without ``tma``: that twin is the search's
    reference and first candidate, and its one-knob neighbours lead the order."""
    default = ChunkConfig.default_for(128, 128, 64, "bf16", "fwd")
    twin = dataclasses.replace(default, tma=False)
    space = generate_space(128, 128, "bf16", PROFILES["h200"], ("chunk",), mode="fwd", chunk_sizes=[64], n_streams=64)
    assert default.tma and twin.name in {c.name for c in space.kept}
    assert space.defaults["chunk"].config == twin
    ordered = space.ordered("chunk")
    assert ordered[0].config == twin
    assert all(space._knobs_apart(ordered[0], c) == 1 for c in ordered[1:8])
    chosen = initial_set("halving", ordered, parse_budget("8"), default=space.defaults["chunk"])
    assert chosen[0].config == twin


def test_kept_twin_follows_duplicate_rules_only():
    """A variant cut as a duplicate maps to the kept variant it duplicates; one cut for another reason
    (a known fault) has no twin, so the search never stands a different computation in for it."""
    space = generate_space(256, 256, "bf16", PROFILES["h200"], ("chunk",), mode="fwd", chunk_sizes=[64], n_streams=64)
    fused = dataclasses.replace(ChunkConfig.default_for(256, 256, 64, "bf16", "fwd"), fuse_output=True)
    assert fused.state_dtype == "bf16" and fused.tma
    twin = space.kept_twin(Candidate("chunk", fused))  # two moot fields: the state dtype, then tma
    assert twin is not None and twin.config == dataclasses.replace(fused, state_dtype="fp32", tma=False)
    faulty = next(p.candidate for p in space.pruned if p.rule == "known-fault" and p.candidate is not None)
    assert space.kept_twin(faulty) is None
    assert space.kept_twin(space.kept[0]) == space.kept[0]


def test_tma_is_a_duplicate_before_compute_capability_9():
    """On an A100 the copy engine is absent, so a ``-tma`` variant runs exactly as the one without it: the
    space keeps only the latter there, and both on an H200."""
    plain = ChunkConfig.default_for(128, 128, 64, "bf16", "fwd")
    names = {p: {c.name for c in generate_space(128, 128, "bf16", PROFILES[p], ("chunk",), mode="fwd",
                                                chunk_sizes=[64]).kept} for p in ("a100", "h200")}
    off = dataclasses.replace(plain, tma=False)
    assert plain.tma and off.name in names["a100"] and plain.name not in names["a100"]
    assert {plain.name, off.name} <= names["h200"]


def test_the_variants_seen_wrong_at_head_dim_64_on_an_h200_are_known_faults_on_sm90_only():
    """The tuner's two GPU verification failures at D = 64 (twelfth lease) are cut before compiling on sm_90;
    the BK = 32 one only where a backward runs (its forward was right); sm_80 keeps both; the default stays."""
    from dnprof.variants.chunk_config import ChunkConfig
    from dnprof.variants.limits import PROFILES
    from dnprof.variants.space import generate_space

    w8 = "c64-bk64-bv64-w8-s2-hbf16-wyf-os-m16-tma"
    bk32 = "c64-bk32-bv64-w4-s2-hbf16-wyf-of-m16-tma"
    default = ChunkConfig.default_for(64, 64, 64, "bf16", "fwdbwd").name
    for profile, mode, cut in (("h200", "fwdbwd", {w8, bk32}), ("h200", "fwd", {w8}), ("a100", "fwdbwd", set())):
        space = generate_space(64, 64, "bf16", PROFILES[profile], ("chunk",), mode=mode, chunk_sizes=[64])
        faults = {p.candidate.name: p.detail for p in space.pruned if p.rule == "known-fault" and p.candidate}
        kept = {c.name for c in space.kept}
        for name in (w8, bk32):
            if name in cut:
                assert name in faults and name not in kept, (profile, mode, name)
            else:
                assert name not in faults, (profile, mode, name)
        assert default not in faults
    h200 = generate_space(64, 64, "bf16", PROFILES["h200"], ("chunk",), chunk_sizes=[64])
    details = {p.candidate.name: p.detail for p in h200.pruned if p.candidate}
    assert "8 warps with the keys in one tile" in details[w8] and "wrong dk and dbeta" in details[bk32]


def test_the_variants_seen_failing_at_head_dim_256_on_an_h200_are_known_faults_on_sm90_only():
    """The thirteenth lease's D = 256 forward tunings: every chunk-64 variant at 8 warps and one stage returned
    wrong values (or faulted), both chunk-128 variants with the WY launch split and the output fused made
    illegal memory accesses, and one 8-warp BV = 128 split-WY forward returned a wrong output. sm_90 cuts
    them before compiling, sm_80 keeps them, neighbours stay."""
    from dnprof.variants.known_faults import sm90_wrong_values

    seen = ["c64-bk128-bv64-w8-s1-hfp32-wyx-of", "c64-bk64-bv64-w8-s1-hfp32-wys-os128-m16-rauto-tma",
            "c64-bk128-bv128-w8-s1-hfp32-wyx-os128", "c128-bk128-bv32-w8-s2-hfp32-wys-of-m16-rauto-tma",
            "c128-bk64-bv16-w4-s4-hfp32-wys-of-m16", "c64-bk64-bv128-w8-s3-hfp32-wys-os-tma"]
    fine = ["c64-bk64-bv128-w8-s3-hfp32-wyf-os-tma", "c64-bk64-bv128-w4-s3-hfp32-wys-os-tma", "c64-bk64-bv64-w8-s2-hfp32-wyx-of", "c64-bk64-bv64-w4-s1-hbf16-wyf-os-m16-rauto-tma",
            "c128-bk64-bv32-w8-s2-hfp32-wyf-of-m16-tma", "c128-bk64-bv32-w8-s2-hbf16-wys-os-m16"]
    for name in seen:
        assert sm90_wrong_values(ChunkConfig.from_name(name), 256, backward=False), name
    for name in fine:
        assert sm90_wrong_values(ChunkConfig.from_name(name), 256, backward=False) is None, name
    h200 = generate_space(256, 256, "bf16", PROFILES["h200"], ("chunk",), mode="fwd")
    a100 = generate_space(256, 256, "bf16", PROFILES["a100"], ("chunk",), mode="fwd")
    faults = {p.candidate.name: p.detail for p in h200.pruned if p.rule == "known-fault" and p.candidate}
    w8s1 = "c64-bk64-bv64-w8-s1-hfp32-wyx-of"
    assert "8 warps and one stage" in faults[w8s1]
    assert "c128-bk64-bv16-w4-s4-hfp32-wys-of-m16" in faults
    a100_faults = {p.candidate.name for p in a100.pruned if p.rule == "known-fault" and p.candidate}
    assert w8s1 not in a100_faults and "c128-bk64-bv16-w4-s4-hfp32-wys-of-m16" not in a100_faults


def test_explicit_serial_tilings_join_the_search_as_neighbours_of_the_default():
    """``recs`` (``dnprof tune --rec``) puts explicit loop tilings in the space; each is one knob from the
    default, so a small budget times them early. A malformed one is refused naming the option."""
    recs = ["auto", "bk256bv64w4s2"]
    space = generate_space(256, 256, "bf16", PROFILES["h200"], ("chunk",), mode="fwd", chunk_sizes=[64],
                           n_streams=32, recs=recs)
    assert {c.config.rec for c in space.kept} == set(recs)
    default = space.defaults["chunk"]
    explicit = dataclasses.replace(default.config, rec="bk256bv64w4s2")
    chosen = initial_set("halving", space.ordered("chunk"), parse_budget("4"), default=default)
    assert explicit in [c.config for c in chosen]
    with pytest.raises(ValueError, match=r"rec \(--rec\).*'bogus'"):
        generate_space(64, 64, "bf16", PROFILES["h200"], ("chunk",), recs=["auto", "bogus"])


def test_cli_rec_option_lists_the_larger_space_and_names_a_bad_value():
    args = ["tune", "--list", "--device-profile", "h200", "--head-dim", "64", "--chunk-size", "64", "--mode", "fwd"]
    plain = CliRunner().invoke(main, args, terminal_width=250)
    wider = CliRunner().invoke(main, [*args, "--rec", "main,auto,bv32w4s3"], terminal_width=250)
    assert plain.exit_code == 0 and wider.exit_code == 0, wider.output

    def generated(out: str) -> int:
        row = next(line for line in out.splitlines() if line.startswith("│ chunk"))
        return int(row.split("│")[2])

    assert generated(wider.output) == 3 * generated(plain.output) // 2
    bad = CliRunner().invoke(main, [*args, "--rec", "bv32w4"], terminal_width=250)
    assert bad.exit_code != 0 and "--rec" in bad.output and "bv32w4" in bad.output


def test_named_variants_join_the_search_right_after_the_default_whatever_the_chosen_fields():
    """``include`` (``dnprof tune --include``) adds a named variant that ``chunk_sizes`` and ``recs`` leave out,
    orders it right after the default, maps a duplicate to the variant it computes the same as, and refuses
    a malformed or pruned name naming the option and the rule."""
    lead = "c32-bk64-bv64-w4-s3-hbf16-wyf-of-m16-rbk256bv64w8s3-tma"
    space = generate_space(256, 256, "bf16", PROFILES["h200"], ("chunk",), mode="fwd", chunk_sizes=[64],
                           n_streams=32, include=[lead, lead.replace("hbf16", "hfp32")])
    plain = generate_space(256, 256, "bf16", PROFILES["h200"], ("chunk",), mode="fwd", chunk_sizes=[64], n_streams=32)
    # a fused forward stores no states, so its state dtype is moot: the bf16 name maps to its fp32 twin, once
    twin = lead.replace("hbf16", "hfp32")
    assert [c.name for c in space.included["chunk"]] == [twin]
    assert len(space.kept) == len(plain.kept) + 1 and twin not in {c.name for c in plain.kept}
    ordered = [c.name for c in space.ordered("chunk")]
    assert ordered[0] == space.defaults["chunk"].name and ordered[1] == twin and ordered.count(twin) == 1
    with pytest.raises(ValueError, match=r"--include c64-bk64-bv64-w4-s2-hbf16-wyf-ox: not a chunk variant name"):
        generate_space(64, 64, "bf16", PROFILES["h200"], ("chunk",), include=["c64-bk64-bv64-w4-s2-hbf16-wyf-ox"])
    with pytest.raises(ValueError, match=r"--include c64-bk64-bv16-w1-s1-hfp32-wyf-os: pruned on .*\(registers\)"):
        generate_space(256, 256, "bf16", PROFILES["h200"], ("chunk",), include=["c64-bk64-bv16-w1-s1-hfp32-wyf-os"])
    with pytest.raises(ValueError, match=r"--include .*chunk family is not searched"):
        generate_space(64, 64, "bf16", PROFILES["h200"], ("recurrent",), include=["c64-bk64-bv64-w4-s2-hfp32-wyf-os"])


def test_a_named_variant_carries_the_flags_of_every_kept_one():
    """A variant kept through ``include`` gets the flags the generated ones get (8 warps on sm_90 here)."""
    named = "c64-bk64-bv64-w8-s2-hfp32-wyf-os"
    space = generate_space(128, 128, "bf16", PROFILES["h200"], ("chunk",), mode="fwd", chunk_sizes=[128],
                           include=[named])
    assert named not in {c.name for c in generate_space(128, 128, "bf16", PROFILES["h200"], ("chunk",), mode="fwd",
                                                        chunk_sizes=[128]).kept}
    assert named in {c.name for c in space.flags["hopper-warps8"]}
    assert [c.name for c in space.flags["hopper-warps8"]].count(named) == 1


def test_cli_include_lists_the_named_variant_and_names_a_bad_one():
    args = ["tune", "--list", "--device-profile", "h200", "--head-dim", "64", "--chunk-size", "64", "--mode", "fwd",
            "--budget", "1"]
    named = "c128-bk64-bv32-w8-s2-hfp32-wys-os"
    res = CliRunner().invoke(main, [*args, "--include", named], terminal_width=250)
    assert res.exit_code == 0, res.output
    assert f"named with --include (chunk, searched after the default): {named}" in res.output
    row = next(line for line in res.output.splitlines() if line.startswith("│ chunk"))
    assert row.split("│")[5].strip() == "2"  # the budget's one (the default) and the named one
    bad = CliRunner().invoke(main, [*args, "--include", "c64-bk64"], terminal_width=250)
    assert bad.exit_code == 2 and "--include c64-bk64" in bad.output
