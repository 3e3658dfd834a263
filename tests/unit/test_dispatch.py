from jobs.adapters.dispatch import queue_name, worker_queues


def test_each_queue_brings_its_low_sibling_and_prep_the_sweeper_first() -> None:
    assert worker_queues(["prep"]) == ["maintenance", "prep", "prep-low"]
    assert worker_queues(["gpu"]) == ["gpu", "gpu-low"]
    assert worker_queues(["prep", "gpu"]) == ["maintenance", "prep", "prep-low", "gpu", "gpu-low"]


def test_priority_picks_the_queue() -> None:
    assert (queue_name("gpu"), queue_name("gpu", "low"), queue_name("prep", "low")) == (
        "gpu",
        "gpu-low",
        "prep-low",
    )
