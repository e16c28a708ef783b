"""The overhead benchmark's arithmetic: the denoiser's time is clocked, and the ratio without its noise is right."""

import torch

from bench.overhead import DenoiserClock, interleaved_with_denoiser, table


def test_the_clock_counts_only_the_denoiser_calls():
    layer = torch.nn.Linear(4, 4)
    clock = DenoiserClock([layer])
    calls = []

    def run() -> None:
        calls.append(1)
        layer(torch.zeros(1, 4))
        layer(torch.zeros(1, 4))

    times = interleaved_with_denoiser({"a": run}, clock, repeats=3)["a"]
    assert len(calls) == 4  # one warm-up, three measured
    assert 0 < times["inside"] <= times["total"]
    assert abs(times["inside"] + times["outside"] - times["total"]) < 1e-3


def test_the_table_takes_the_shared_denoiser_time_out_of_the_ratio():
    bare = {"total": 10.0, "inside": 8.0, "outside": 2.0}
    studio = {"total": 9.0, "inside": 6.8, "outside": 2.2}  # a faster denoiser run, 0.2 s more outside it
    text = table([("SD 1.5", {"bare diffusers": bare, "studio": studio, "dtype": "bfloat16"}, 1.03)], 7, 2)
    row = text.splitlines()[-1]
    assert "| 0.900x |" in row  # the plain ratio of medians
    assert "| 1.020x |" in row  # (10 + 2.2 - 2.0) / 10
    assert "| 0.850x |" in row  # the denoiser's own ratio
    assert "2.000 s / 2.200 s" in row
