"""Verification records: the Verdict's JSON form, schema validation on read,
and a results file that is never written to before it is known to be ours."""

import dataclasses
import json

import numpy as np
import pytest

from robust_prune import io
from robust_prune.network import Network
from robust_prune.verify import records, runner

WITNESS = [0.25] * 784


def _verdict(**fields):
  base = dict(image_index=3, label=7, target=1, status="robust", delta=0.05,
              mode="certify", objective=0.5, best_bound=0.25, optimal=True,
              build_seconds=0.1, bounds_seconds=0.2, solve_seconds=0.3,
              num_binaries=4, solver="HIGHS", bounds="crown",
              unstable_per_layer=(3, 1), decided_by="milp",
              network_sha256="ab" * 32)
  return records.Verdict(**{**base, **fields})


# A line as the code before the Verdict type wrote it (key order, a null
# witness_margin, every base field).
OLD_LINE = json.dumps({
    "image_index": 0, "label": 7, "target": 0, "delta": 0.05,
    "mode": "targeted", "status": "timeout", "objective": -0.5,
    "best_bound": -1.25, "optimal": False, "build_seconds": 0.02,
    "bounds_seconds": 0.01, "solve_seconds": 3.0, "num_binaries": 12,
    "solver": "HIGHS", "bounds": "crown", "unstable_per_layer": [5, 7],
    "bab_domains": 40, "bab_seconds": 2.0, "decided_by": "milp",
    "solver_status": "time_limit", "witness_margin": None,
    "image_seconds": 9.5, "network_sha256": "cd" * 32})


def test_round_trip_keeps_every_field_and_unknown_keys():
  v = _verdict(status="adversarial", x_adv=tuple(WITNESS), witness_margin=-0.1,
               extra={"future_field": [1, 2]})
  line = json.dumps(v.to_json())
  back = records.Verdict.from_json(json.loads(line))
  assert back == v and back.x_adv == v.x_adv
  assert back.extra == {"future_field": [1, 2]}
  assert json.loads(line)["future_field"] == [1, 2]
  # The Mapping view reads like the dicts records used to be.
  assert back["status"] == "adversarial" and back.get("message") is None
  assert "message" not in back and "x_adv" in back
  assert dict(back)["unstable_per_layer"] == [3, 1]
  with pytest.raises(dataclasses.FrozenInstanceError):
    back.status = "robust"  # pytype: disable=not-writable


def test_always_written_fields_are_null_not_missing():
  v = records.Verdict(image_index=0, label=1, target=2, status="error")
  obj = v.to_json()
  for key in records.ALWAYS_WRITTEN:
    assert key in obj and obj[key] is None
  assert "x_adv" not in obj and "message" not in obj


def test_an_old_line_reads_and_compares_equal_to_its_dict(tmp_path):
  path = tmp_path / "old.jsonl"
  path.write_text(OLD_LINE + "\n")
  (v,) = records.read_results(str(path))
  expected = {k: val for k, val in json.loads(OLD_LINE).items()
              if val is not None or k in records.ALWAYS_WRITTEN}
  assert v == expected
  assert v.unstable_per_layer == (5, 7) and v.witness_margin is None


def _bogus(**changes):
  obj = json.loads(OLD_LINE)
  obj.update(changes)
  return json.dumps({k: v for k, v in obj.items() if v != "DROP"})


@pytest.mark.parametrize("line,message", [
    ('{"image_index": 2, "target": 3, "status": "adversarial"}',
     "missing label"),
    (_bogus(status="adversarial"), "needs its witness x_adv"),
    (_bogus(target=42), "target 42 is not a class"),
    (_bogus(label=-1), "label -1 is below 0"),
    (_bogus(target=7), "target 7 is the label"),
    (_bogus(status="adversarial", x_adv=[0.5] * 783), "x_adv has 783 values"),
    (_bogus(status="adversarial", x_adv=[0.5] * 783 + ["a"]), "not a number"),
    (_bogus(image_index=-3), "image_index -3 is below 0"),
    (_bogus(image_index=1.5), "image_index 1.5 is not an integer"),
    (_bogus(image_index=True), "is not an integer"),
    (_bogus(status="won"), "unknown status"),
    (_bogus(objective=float("nan")), "objective nan is not finite"),
    (_bogus(best_bound=float("-inf")), "best_bound -inf is not finite"),
    (_bogus(solve_seconds=-1.0), "solve_seconds -1.0 is below 0"),
    (_bogus(optimal="yes"), "is not true or false"),
    (_bogus(mode="exact"), "unknown mode"),
    (_bogus(decided_by="oracle"), "unknown decided_by"),
    (_bogus(unstable_per_layer=[1, -2]), "unstable_per_layer[1] -2"),
    (_bogus(delta=float("inf")), "delta inf is not finite"),
    ('[1, 2]', "a record is a JSON object"),
    ('{"image_index": 0, "target": 1', "JSONDecodeError"),
])
def test_bogus_records_name_file_and_line(tmp_path, line, message):
  path = tmp_path / "r.jsonl"
  path.write_text(OLD_LINE + "\n" + line + "\n" + OLD_LINE + "\n")
  with pytest.raises(records.RecordError) as error:
    records.read_results(str(path))
  assert str(error.value).startswith(f"{path}:2: not a result record")
  assert message in str(error.value)


def test_a_witness_of_the_network_input_size_reads_with_that_size(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_text(_bogus(status="adversarial", x_adv=[0.5] * 12) + "\n")
  (v,) = records.read_results(str(path), input_size=12)
  assert len(v.x_adv) == 12
  with pytest.raises(records.RecordError, match="x_adv has 12 values"):
    records.read_results(str(path))


def test_a_non_utf8_line_names_its_file_and_line(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_bytes(OLD_LINE.encode() + b"\n" + b'{"image_index": \xff}\n')
  with pytest.raises(records.RecordError, match=f"{path}:2: .*not UTF-8"):
    records.read_results(str(path))


def test_cut_off_last_line_is_skipped_but_a_whole_one_is_kept(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_text(OLD_LINE + "\n" + OLD_LINE[:40])
  found, cut_at = records.scan(str(path))
  assert len(found) == 1 and cut_at == len(OLD_LINE) + 1
  assert len(records.read_results(str(path))) == 1
  path.write_text(OLD_LINE + "\n" + '{"ima')
  assert records.scan(str(path))[1] == len(OLD_LINE) + 1
  second = OLD_LINE.replace('"target": 0', '"target": 1')
  path.write_text(OLD_LINE + "\n" + second)   # whole, only the newline lost
  found, cut_at = records.scan(str(path))
  assert cut_at is None and [r.target for r in found] == [0, 1]


def test_latest_record_per_pair_and_error_records_are_not_finished():
  a = _verdict(target=1, status="error")
  b = _verdict(target=2)
  a_again = dataclasses.replace(a, status="robust")
  assert records.latest_per_pair([a, b, a_again]) == [a_again, b]
  assert records.finished_pairs([a, b]) == {(3, 2)}
  assert records.finished_pairs([a, b, a_again]) == {(3, 1), (3, 2)}


def test_writer_appends_fsynced_lines_and_repairs_a_missing_newline(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_text(OLD_LINE)   # a whole record without its newline
  existing, cut_at = records.scan(str(path))
  with records.ResultsWriter(str(path), num_classes=10,
                             input_size=784).open(cut_at) as writer:
    writer.append([_verdict(target=2), _verdict(target=3)])
  lines = path.read_text().splitlines()
  assert lines[0] == OLD_LINE and len(lines) == 3
  assert [r.target for r in records.read_results(str(path))] == [0, 2, 3]
  with records.ResultsWriter(str(path), num_classes=10,
                             input_size=784).open(None) as writer:
    with pytest.raises(ValueError, match="x_adv has 5 values"):
      writer.append([_verdict(status="adversarial", x_adv=(0.1,) * 5)])
  assert len(path.read_text().splitlines()) == 3   # nothing unreadable written


def _tiny_mnist_network():
  rng = np.random.default_rng(0)
  return Network((rng.normal(size=(784, 4)).astype(np.float32),
                  rng.normal(size=(4, 10)).astype(np.float32)),
                 (np.zeros(4, np.float32), np.zeros(10, np.float32)))


def _verify_into(out):
  return runner.verify_images(_tiny_mnist_network(),
                              np.zeros((1, 784), np.float32), [3], [0], 0.02,
                              out_path=str(out), workers=1, pgd_steps=0,
                              bab_time_limit=0.0)


def test_a_second_run_on_one_results_file_is_refused(tmp_path):
  out = tmp_path / "r.jsonl"
  _verify_into(out)
  before = out.read_bytes()
  with io.WorkdirLock(str(out), "verification run"):
    with pytest.raises(io.LockedError, match="in use by another verification"):
      _verify_into(out)
  assert out.read_bytes() == before
  assert len(_verify_into(out)) == 9   # free again afterwards
