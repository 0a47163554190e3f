"""`serving/serve_config.yaml` is a valid Serve config whose builder builds our application."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from serving_support import Server

from serving.deploy import IMPORT_PATH, app_args_from_settings, app_config, merge_user_configs
from serving.resolve import ModelRef

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "serving" / "serve_config.yaml"


def test_serve_config_is_a_valid_deploy_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    [app] = schema.applications
    assert app.import_path == IMPORT_PATH
    assert app.route_prefix == "/"
    assert (REPO / app.args["config_path"]).exists()


@pytest.mark.serving
@pytest.mark.slow
def test_builder_from_the_config_builds_every_deployment(server: Server) -> None:
    from ray.serve._private.build_app import build_app
    from ray.serve._private.utils import import_attr

    raw = yaml.safe_load(CONFIG.read_text())
    args = dict(raw["applications"][0]["args"])
    args["config_path"] = str(server.settings.config_path)  # the test registry, not the repo's
    builder = import_attr(raw["applications"][0]["import_path"])
    built = build_app(builder(args), name="config-check")
    names = {d.name for d in built.deployments}
    # The ingress hosts the champion in process: there is no `champion` deployment.
    assert names == {"ingress", "shadow-1"}
    by_name = {d.name: d for d in built.deployments}
    ingress = by_name["ingress"]._deployment_config.user_config
    assert ingress["champion"]["version"] == "1"
    assert by_name["shadow-1"]._deployment_config.user_config["model"]["version"] == "2"
    assert built.ingress_deployment_name == "ingress"


@pytest.mark.serving
@pytest.mark.slow
def test_reload_keeps_what_fixes_the_code_version(server: Server) -> None:
    args = app_args_from_settings(server.settings)
    ref = ModelRef(name="m", version="9", run_id="r", alias="champion")
    wanted = app_config(args, {"champion": ref})
    deployed = {
        "name": "mlops",
        "import_path": IMPORT_PATH,
        "args": {"config_path": "config/config.yaml"},
        "runtime_env": {"env_vars": {"A": "1"}},
        "deployments": [{"name": "shadow-1", "num_replicas": 2, "user_config": {}}],
    }
    merged = merge_user_configs(deployed, wanted)
    assert merged["args"] == deployed["args"]
    assert merged["runtime_env"] == deployed["runtime_env"]
    deps = {d["name"]: d for d in merged["deployments"]}
    assert deps["shadow-1"]["num_replicas"] == 2  # what the deployer set is kept
    assert deps["shadow-1"]["user_config"]["model"] is None
    assert deps["ingress"]["user_config"]["champion"]["version"] == "9"
    assert deps["ingress"]["user_config"]["shadow_traffic_percent"] == 100
