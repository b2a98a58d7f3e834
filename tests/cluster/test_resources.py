"""What GPU jobs ask their scheduler for (llmhpc.cluster.resources), from the site's node shape."""

from llmhpc.cluster import resources as jobspec

GADI = {"scheduler": "pbs", "gpus_per_node": 4, "cpus_per_node": 48}
SLURM_KNOWN = {"scheduler": "slurm", "gpus_per_node": 8, "cpus_per_node": 112}
SLURM_UNKNOWN = {"scheduler": "slurm", "gpus_per_node": 4, "cpus_per_node": None}
LOCAL = {"scheduler": "local", "gpus_per_node": 0, "cpus_per_node": None}


def test_local_gpu_jobs_take_every_local_core():
    assert jobspec.gpu_job_threads(LOCAL, 16) == 16
    assert jobspec.gpu_job_threads(LOCAL, None) == 1


def test_scheduled_gpu_jobs_take_the_cpus_of_one_gpu_not_the_login_nodes_cores():
    assert jobspec.gpu_job_threads(GADI, 256) == 12
    assert jobspec.gpu_job_threads(SLURM_KNOWN, 256) == 14
    # Unknown node shape: one thread per process, and Slurm is asked for no CPUs (its default applies).
    assert jobspec.gpu_job_threads(SLURM_UNKNOWN, 256) == 1
    assert jobspec.slurm_cpus_per_task(SLURM_UNKNOWN) == -1
    assert jobspec.slurm_cpus_per_task(SLURM_KNOWN) == 0
    assert jobspec.slurm_cpus_per_task(GADI) == 0


def test_more_gpus_than_cores_still_gives_one_cpu():
    assert jobspec.cpus_per_gpu({"gpus_per_node": 4, "cpus_per_node": 2}) == 1


def test_gres_only_on_slurm_sites_with_gpus():
    assert jobspec.slurm_gres(SLURM_KNOWN, 4) == "gpu:4"
    assert jobspec.slurm_gres(GADI, 4) == ""
    assert jobspec.slurm_gres({"scheduler": "slurm", "gpus_per_node": 0}, 1) == ""
    assert jobspec.slurm_gres(SLURM_KNOWN, 0) == ""


def test_scoring_needs_a_gpu_unless_told_cpu():
    assert jobspec.evaluate_gpus({"device": "auto"}, GADI) == 1
    assert jobspec.evaluate_gpus({"device": "cuda"}, SLURM_KNOWN) == 1
    assert jobspec.evaluate_gpus({"device": "cpu"}, GADI) == 0
    assert jobspec.evaluate_gpus({"device": "auto"}, LOCAL) == 0
