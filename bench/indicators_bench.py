"""Throughput of the indicators: ours (one 2-D call per indicator) vs TA-Lib and pandas-ta
(a loop over rows), plus the latency of one incremental Bank.update over 2,400 streams.

Data: a seeded geometric random walk, 48 streams x 129,600 closes (90 days of 1m candles),
prices rounded to cents.  All figures are medians over several repetitions.

Each contender is timed in a fresh child process: TA-Lib's loop speed depends on what ran
before it in the same process (glibc's allocation thresholds decide whether its per-row buffers
are reused or fresh pages: the same loop measured 72 ms or 144 ms), so timing contenders one
after another in one process favours whoever runs after the most allocation.  Every child pins
BLAS to one thread, as the daemon does (``ingestor.cli`` at start-up): with BLAS's default thread
count our bulk figure swung from 14.8 M to 1.3 M candles/s when another process loaded the
machine.  The pin is applied after the contender's libraries are imported (threadpoolctl limits
the libraries loaded at that moment), and the thread count threadpoolctl then sees is reported.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

import indicators as ind

__all__ = ["run"]

STREAMS, CLOSES = 48, 129_600
BANK_STREAMS, BANK_CALLS = 2_400, 2_000
PTA_ROWS = 2  # pandas-ta is slow: measured on fewer rows, reported per candle
REPEATS = 5


def _median_time(fn: Callable[[], object], repeats: int = REPEATS) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``fn`` (CPU time does not count the time other
    processes held the cores: on a shared machine it compares contenders more fairly)."""
    fn()  # warm caches and lazy imports
    times, cpu = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu)


def _closes(rows: int, n: int, seed: int = 42) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    walk = 3e4 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, (rows, n)), axis=1))
    return np.ascontiguousarray(np.round(walk, 2))


def _ours(x: NDArray[np.float64]) -> None:
    ind.sma(x, 50)
    ind.ema(x, 20)
    ind.rsi(x, 14)
    ind.macd(x, 12, 26, 9)
    ind.bollinger(x, 20, 2.0)


def _talib(x: NDArray[np.float64], keep: bool) -> list[object]:
    """TA-Lib over every row.  ``keep``: hold all outputs, as our 2-D call does (every output
    needs fresh memory); otherwise each row's outputs are dropped at once, so TA-Lib reuses
    the same hot memory row after row (its best case)."""
    import talib

    kept: list[object] = []
    for row in x:
        outs = (
            talib.SMA(row, 50),
            talib.EMA(row, 20),
            talib.RSI(row, 14),
            talib.MACD(row, 12, 26, 9),
            talib.BBANDS(row, 20, 2.0, 2.0, 0),  # type: ignore[arg-type]  # 0 = SMA
        )
        if keep:
            kept.append(outs)
    return kept


def _pandas_ta(x: NDArray[np.float64]) -> None:
    import pandas as pd
    import pandas_ta as pta

    for row in x:
        s = pd.Series(row)
        pta.sma(s, 50, talib=False)
        pta.ema(s, 20, talib=False)
        pta.rsi(s, 14, talib=False)
        pta.macd(s, 12, 26, 9, talib=False)
        pta.bbands(s, 20, 2.0, 2.0, ddof=0, talib=False)


def _bank_update_us() -> dict[str, float]:
    """Wall-clock latency of each call, and the CPU time this thread spent in it (on a shared
    machine the wall-clock tail is mostly time the thread waited for a core)."""
    x = _closes(BANK_STREAMS, 200 + BANK_CALLS, seed=7)
    bank = ind.Bank(BANK_STREAMS)
    bank.warm_many(np.arange(BANK_STREAMS), x[:, :200])
    ids = np.arange(BANK_STREAMS, dtype=np.intp)
    times, cpu = [], []
    for t in range(200, 200 + BANK_CALLS):
        col = np.ascontiguousarray(x[:, t])
        c0 = time.thread_time()
        t0 = time.perf_counter()
        bank.update(ids, col)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    us = np.array(times) * 1e6
    cpu_us = np.array(cpu) * 1e6
    return {
        "median_us": float(np.median(us)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
        "cpu_median_us": float(np.median(cpu_us)),
        "cpu_p99_us": float(np.percentile(cpu_us, 99)),
    }


def _one_blas_thread() -> int:
    """Pin every BLAS library loaded in this process to one thread, as the daemon does, and
    return the largest thread count threadpoolctl then sees (0: no BLAS loaded)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    return max(
        (int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"), default=0
    )


def _contender(name: str) -> tuple[Any, int]:
    """One contender's figure (median seconds, or Bank.update latencies) and the BLAS thread
    count it ran with, in this (fresh) process."""
    if name in ("talib_kept", "talib_dropped"):
        import talib  # noqa: F401  # loaded before the pin, so the pin covers its libraries
    elif name == "pandas_ta":
        import pandas_ta  # noqa: F401
    threads = _one_blas_thread()
    if name == "bank":
        return _bank_update_us(), threads
    x = _closes(STREAMS, CLOSES)
    if name == "ours":
        return _median_time(lambda: _ours(x)), threads
    if name == "talib_kept":
        return _median_time(lambda: _talib(x, keep=True)), threads
    if name == "talib_dropped":
        return _median_time(lambda: _talib(x, keep=False)), threads
    return _median_time(lambda: _pandas_ta(x[:PTA_ROWS]), repeats=3), threads


def _in_fresh_process(name: str, blas: dict[str, int]) -> Any:
    """Run one contender in a fresh process; record its BLAS thread count in ``blas``."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        figure, threads = pool.apply(_contender, (name,))
    blas[name] = int(threads)
    return figure


def run() -> dict[str, Any]:
    candles = STREAMS * CLOSES
    blas: dict[str, int] = {}
    ours_s, ours_cpu = _in_fresh_process("ours", blas)
    talib_s, talib_cpu = _in_fresh_process("talib_kept", blas)
    talib_hot_s, talib_hot_cpu = _in_fresh_process("talib_dropped", blas)
    pta_s, pta_cpu = _in_fresh_process("pandas_ta", blas)
    ours_rate = candles / ours_s
    talib_rate = candles / talib_s
    talib_hot_rate = candles / talib_hot_s
    pta_rate = PTA_ROWS * CLOSES / pta_s
    bank: dict[str, float] = _in_fresh_process("bank", blas)
    figures: dict[str, Any] = {
        "shape": [STREAMS, CLOSES],
        "blas_threads": blas,
        "ours_candles_per_s": round(ours_rate),
        "talib_candles_per_s": round(talib_rate),
        "talib_outputs_dropped_candles_per_s": round(talib_hot_rate),
        "pandas_ta_candles_per_s": round(pta_rate),
        "pandas_ta_rows_measured": PTA_ROWS,
        "ours_vs_talib": round(ours_rate / talib_rate, 3),
        "ours_vs_talib_outputs_dropped": round(ours_rate / talib_hot_rate, 3),
        "ours_vs_pandas_ta": round(ours_rate / pta_rate, 2),
        "cpu_s": {
            "ours": round(ours_cpu, 4),
            "talib_kept": round(talib_cpu, 4),
            "talib_dropped": round(talib_hot_cpu, 4),
            "pandas_ta": round(pta_cpu, 4),
        },
        "ours_vs_talib_cpu": round(talib_cpu / ours_cpu, 3),
        "ours_vs_talib_outputs_dropped_cpu": round(talib_hot_cpu / ours_cpu, 3),
        "ours_vs_pandas_ta_cpu": round(pta_cpu / PTA_ROWS * STREAMS / ours_cpu, 2),
        "bank_streams": BANK_STREAMS,
        "bank_update_median_us": round(bank["median_us"], 1),
        "bank_update_p99_us": round(bank["p99_us"], 1),
        "bank_update_mean_us": round(bank["mean_us"], 1),
        "bank_update_cpu_median_us": round(bank["cpu_median_us"], 1),
        "bank_update_cpu_p99_us": round(bank["cpu_p99_us"], 1),
        "targets": {
            "ours_vs_talib_min": 0.5,
            "ours_vs_pandas_ta_min": 3.0,
            "bank_update_median_us_max": 200.0,
        },
    }
    figures["targets_met"] = {
        "bulk_vs_talib": figures["ours_vs_talib"] >= 0.5,
        "bulk_vs_talib_outputs_dropped": figures["ours_vs_talib_outputs_dropped"] >= 0.5,
        "bulk_vs_pandas_ta": figures["ours_vs_pandas_ta"] >= 3.0,
        "incremental": figures["bank_update_median_us"] <= 200.0,
        "blas_one_thread": all(n == 1 for n in blas.values()),
    }
    print(
        "BLAS threads seen by threadpoolctl in each contender's process: "
        + ", ".join(f"{name} {n}" for name, n in blas.items())
    )
    print(
        f"bulk, all five indicators on {STREAMS}x{CLOSES}: ours {ours_rate / 1e6:.1f} M candles/s"
        f" ({ours_s * 1e3:.0f} ms), TA-Lib {talib_rate / 1e6:.1f} M/s ({talib_s * 1e3:.0f} ms)"
        f" keeping its outputs, {talib_hot_rate / 1e6:.1f} M/s ({talib_hot_s * 1e3:.0f} ms)"
        f" dropping each row's outputs at once, pandas-ta {pta_rate / 1e6:.2f} M/s"
        f" (measured on {PTA_ROWS} rows, per candle)"
    )
    print(
        f"ratios: ours/TA-Lib = {ours_rate / talib_rate:.2f}x outputs kept,"
        f" {ours_rate / talib_hot_rate:.2f}x outputs dropped (target >= 0.5),"
        f" ours/pandas-ta = {ours_rate / pta_rate:.1f}x (target >= 3)"
    )
    print(
        f"same ratios on CPU time: {talib_cpu / ours_cpu:.2f}x outputs kept,"
        f" {talib_hot_cpu / ours_cpu:.2f}x outputs dropped,"
        f" {pta_cpu / PTA_ROWS * STREAMS / ours_cpu:.1f}x pandas-ta"
    )
    print(
        f"Bank.update, one candle for each of {BANK_STREAMS} streams: median"
        f" {bank['median_us']:.0f} us, p99 {bank['p99_us']:.0f} us (target median <= 200 us);"
        f" CPU time in the call: median {bank['cpu_median_us']:.0f} us,"
        f" p99 {bank['cpu_p99_us']:.0f} us"
    )
    return figures
