"""KFP component: delete the training jobs of a pipeline run (the pipeline's exit handler)."""

from kfp import dsl

from mlm_components import MLM_IMAGE


@dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)
def cleanup(launcher: str = "local", run_id: str = ""):
    """Deletes every `launcher` job labelled with pipeline run `run_id` in this pod's namespace.

    Runs when the run ends, whether it succeeded, failed or was terminated, so that no TrainJob
    or TFJob keeps holding its nodes. Nothing to do for launcher "local".
    """
    if launcher == "local":
        print("launcher local: no job to delete")
        return
    from mlm.launch.kubernetes import delete_run_jobs

    deleted = delete_run_jobs(launcher, run_id)
    print(f"deleted {len(deleted)} {launcher} job(s) of run {run_id}: {', '.join(deleted)}")
