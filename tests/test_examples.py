"""The cluster recipes under examples/cluster/ parse, and the `ray up` one passes Ray's own cluster-config schema."""
import subprocess
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "examples" / "cluster"


def test_ray_up_yaml_passes_rays_cluster_config_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` runs before it starts anything; raises when invalid
    assert config["head_node_type"] == "head" and config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert any("tune-eskd" in c for c in config["setup_commands"])
    assert any("/shared" in c for c in config["initialization_commands"])
    assert all("RAY_AUTH_MODE=token" in " ".join(config[k])
               for k in ("head_start_ray_commands", "worker_start_ray_commands"))


def test_rayjob_manifest_runs_a_sweep_and_resumes_it():
    job, claim = yaml.safe_load_all((CLUSTER / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert "tune-eskd sweep" in job["spec"]["entrypoint"] and "tune-eskd resume" in job["spec"]["entrypoint"]
    assert job["spec"]["backoffLimit"] >= 1
    mounts = {v["persistentVolumeClaim"]["claimName"]
              for group in [job["spec"]["rayClusterSpec"]["headGroupSpec"], *job["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
              for v in group["template"]["spec"]["volumes"]}
    assert mounts == {claim["metadata"]["name"]} and claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_sbatch_script_is_valid_bash_and_starts_ray_with_a_token():
    script = CLUSTER / "slurm-sweep.sbatch"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = script.read_text()
    assert "ray start --head" in text and "ray start --address" in text
    assert "RAY_AUTH_MODE=token" in text and "RAY_AUTH_TOKEN" in text and "tune-eskd resume" in text
