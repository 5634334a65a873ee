"""LTU-AS's three-stage curriculum (mowe.ltu_as.stages)."""

from mowe.ltu_as import LTU_AS_CLOSED_ENDED_TASKS
from mowe.ltu_as.stages import ltu_as_stages


def test_ltu_as_stages_shape():
    assert ltu_as_stages(10)[1].tasks is None
    s1, s2, s3 = ltu_as_stages(10, closed_ended_tasks=LTU_AS_CLOSED_ENDED_TASKS)
    assert s1.train == ("connector",) and s1.lr == 1e-3
    assert set(s2.tasks) == {"gender", "accent", "speaking_rate", "sound_event", "chord", "tempo"}
    assert s2.lr == s3.lr == 1e-4 and s3.tasks is None and set(s2.train) == set(s3.train)
