"""bench.compare: two bench --json results row by row."""
import json

from minimax_rocm.bench import compare as C


def _write(path, rows):
    path.write_text(json.dumps(dict(env={}, rows=[dict(op=o, case=c, impl=i, us=us) for o, c, i, us in rows])))
    return str(path)


def test_rows_match_by_op_case_impl_and_slower_rows_fail(tmp_path, capsys):
    before = _write(tmp_path / "b.json", [("op", "T=1", "ours", 10.0), ("op", "T=1", "base", 20.0),
                                          ("op", "T=2", "ours", 10.0), ("gone", "x", "y", 1.0)])
    after = _write(tmp_path / "a.json", [("op", "T=1", "ours", 10.4), ("op", "T=1", "base", 17.0),
                                         ("op", "T=2", "ours", 11.0), ("new", "x", "y", 1.0)])
    changes = C.compare(C.load_rows(before), C.load_rows(after))
    by_key = {c.key: c for c in changes}
    assert abs(by_key[("op", "T=1", "ours")].ratio - 1.04) < 1e-9
    assert by_key[("gone", "x", "y")].ratio is None and by_key[("new", "x", "y")].ratio is None
    assert [c.key for c in C.slower(changes, 0.05)] == [("op", "T=2", "ours")]    # 10% slower
    assert C.main([before, after]) == 1
    out = capsys.readouterr().out
    assert "SLOWER" in out and "faster" in out and "before only" in out and "after only" in out
    assert C.main([before, after, "--tolerance", "0.2"]) == 0
