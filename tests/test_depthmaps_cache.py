"""The depth cache: keys, LRU by bytes, read-only entries, counters, threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from lib_depth2img.depthmaps.cache import DepthCache, depth_key

MAP_BYTES = 16 * 16 * 4  # one 16 x 16 float32 map


def key(n: int = 0, **changes):
    settings = {"estimator": "dpt_hybrid", "weights_id": "sha-abc", "net_size": 384} | changes
    return depth_key(Image.new("RGB", (16, 16), (n, 0, 0)), **settings)


def depth(value: float = 0.5) -> np.ndarray:
    return np.full((16, 16), value, np.float32)


def test_key_depends_on_pixels_not_on_the_image_object():
    assert key(1) == key(1)
    assert key(1) != key(2)
    pixels = np.zeros((16, 16, 3), np.uint8)
    one_pixel_off = pixels.copy()
    one_pixel_off[8, 8, 1] = 1
    args = ("dpt_hybrid", "w", 384)
    assert depth_key(Image.fromarray(pixels), *args) != depth_key(Image.fromarray(one_pixel_off), *args)


def test_key_depends_on_size_mode_palette_estimator_weights_and_resolution():
    gray = Image.new("L", (4, 4), 0)
    assert depth_key(gray, "e", "w", 384) != depth_key(Image.new("L", (2, 8), 0), "e", "w", 384)
    assert depth_key(gray, "e", "w", 384) != depth_key(Image.new("P", (4, 4), 0), "e", "w", 384)
    red, blue = Image.new("P", (4, 4), 0), Image.new("P", (4, 4), 0)
    red.putpalette([255, 0, 0]), blue.putpalette([0, 0, 255])
    assert depth_key(red, "e", "w", 384) != depth_key(blue, "e", "w", 384)
    assert key(estimator="dpt_large") != key()
    assert key(weights_id="sha-other") != key()
    assert key(net_size=512) != key()


def test_hits_and_misses_are_counted():
    cache = DepthCache()
    assert cache.get(key()) is None
    cache.put(key(), depth())
    np.testing.assert_array_equal(cache.get(key()), depth())
    assert (cache.hits, cache.misses, len(cache), cache.nbytes) == (1, 1, 1, MAP_BYTES)


def test_entries_are_read_only_copies():
    cache = DepthCache()
    original = depth(0.5)
    cache.put(key(), original)
    original[:] = 0.0  # the caller reuses its buffer
    assert cache.get(key())[0, 0] == 0.5
    with pytest.raises(ValueError, match="read-only"):
        cache.get(key())[0, 0] = 1.0


def test_least_recently_used_entry_is_evicted_when_bytes_run_out():
    cache = DepthCache(max_bytes=3 * MAP_BYTES)
    for n in range(3):
        cache.put(key(n), depth())
    cache.get(key(0))  # 0 is now the most recently used; 1 the least
    cache.put(key(3), depth())
    assert key(1) not in cache and all(key(n) in cache for n in (0, 2, 3))
    assert cache.evictions == 1 and cache.nbytes == 3 * MAP_BYTES


def test_replacing_an_entry_does_not_count_its_bytes_twice():
    cache = DepthCache(max_bytes=2 * MAP_BYTES)
    cache.put(key(0), depth(0.1))
    cache.put(key(0), depth(0.2))
    assert (len(cache), cache.nbytes, cache.evictions) == (1, MAP_BYTES, 0)
    assert cache.get(key(0))[0, 0] == pytest.approx(0.2)


def test_a_map_larger_than_the_cache_is_returned_but_not_stored():
    cache = DepthCache(max_bytes=MAP_BYTES - 1)
    returned = cache.put(key(), depth())
    assert not returned.flags.writeable and len(cache) == 0 and cache.nbytes == 0


def test_clear_empties_but_keeps_the_counters():
    cache = DepthCache()
    cache.put(key(), depth())
    cache.get(key())
    cache.clear()
    assert (len(cache), cache.nbytes, cache.hits) == (0, 0, 1)
    assert cache.get(key()) is None


def test_get_or_compute_computes_on_a_miss_only():
    cache = DepthCache()
    computed = []
    first, was_hit = cache.get_or_compute(key(), lambda: computed.append(1) or depth())
    again, was_hit_again = cache.get_or_compute(key(), lambda: computed.append(1) or depth())
    assert (was_hit, was_hit_again, len(computed)) == (False, True, 1)
    assert again is first


def test_threads_asking_for_the_same_missing_map_compute_it_once():
    cache = DepthCache()
    calls = []

    def slow_estimate():
        calls.append(1)
        time.sleep(0.05)
        return depth()

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute(key(), slow_estimate)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False] + [True] * 7
    assert (cache.misses, cache.hits) == (1, 7)


def test_concurrent_use_keeps_the_byte_count_exact():
    cache = DepthCache(max_bytes=5 * MAP_BYTES)

    def worker(offset: int) -> None:
        for n in range(40):
            cache.get_or_compute(key((offset + n) % 12), depth)

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) <= 5 and cache.nbytes == len(cache) * MAP_BYTES
    assert cache.hits + cache.misses == 160
