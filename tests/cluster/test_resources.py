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
    assert jobspec.slurm_cpus_per_task(SLURM_KNOWN) == 14  # given outright, not capped at the login node's cores
    assert jobspec.slurm_cpus_per_task(SLURM_KNOWN, 4) == 56  # one task over 4 GPUs (scoring)
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


# A Slurm GPU node of 4 GPUs, 64 cores and 256 GB; Gadi's gpuvolta node (4 GPUs, 48 cores, 382 GB) under PBS.
SLURM_NODE = {"scheduler": "slurm", "gpus_per_node": 4, "cpus_per_node": 64, "mem_per_node_gb": 256}
GADI_NODE = {**GADI, "mem_per_node_gb": 382}


def test_gpu_jobs_ask_their_gpus_share_of_the_node_at_least_what_the_model_needs():
    """Sized as PBS sizes them, from the node and the model: not the profile's flat 16 GB for a 7B fine-tune on
    2 x 4 GPUs, nor 8 GB to score a 30B model whose conversion takes 94 GB."""
    assert jobspec.gpu_job_mem_mb(SLURM_NODE, "Llama-2-7b-hf", 4, nodes=2) == 256000  # --mem is per node
    assert jobspec.gpu_job_mem_mb(SLURM_NODE, "Llama-2-7b-hf", 1) == 64000  # one GPU's share
    assert jobspec.gpu_job_mem_mb(SLURM_NODE, "llama-30b", 1) == 94000  # loading the model takes more than it
    assert jobspec.gpu_job_mem_mb(SLURM_NODE, "llama-30b", 4) == 256000  # 4 x 94 GB: never more than the node
    assert jobspec.gpu_job_mem_mb(GADI_NODE, "Llama-2-7b-hf", 4, nodes=2) == 764000  # PBS: the job's total
    assert jobspec.gpu_job_mem_mb(LOCAL, "pythia-14m", 0) == 4042


def test_the_sites_account_partition_constraint_and_qos_become_sbatch_resources():
    site = {**SLURM_NODE, "account": "ab12", "partition": "gpu", "constraint": "a100", "qos": None}
    assert jobspec.slurm_site_resources(site) == {"slurm_account": "ab12", "slurm_partition": "gpu",
                                                  "constraint": "a100"}
    assert jobspec.slurm_site_resources(SLURM_NODE) == {}  # left to the profile's default-resources
    assert jobspec.slurm_site_resources({**GADI, "partition": "gpu"}) == {}  # not a Slurm site



def test_a_machine_whose_gpus_are_hidden_has_none(monkeypatch):
    """CUDA_VISIBLE_DEVICES empty or -1 hides every GPU from the jobs, whatever device files the machine has."""
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert jobspec.local_gpu_present() is False
