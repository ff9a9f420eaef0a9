"""``resume-ner k8s ...``: Kubernetes resources of the project; ``k8s pytorchjob render`` prints the PyTorchJob of a
multi-node final training (``resume-ner k8s pytorchjob render | kubectl apply -f -``), ``k8s inferenceservice render``
the KServe InferenceService that serves a registered version."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from resume_ner.cli.model_commands import load_config_from_args
from resume_ner.errors import ConfigError
from resume_ner.serving.local_server import SERVER_WORKERS


def cmd_render(args: argparse.Namespace) -> int:
    """Print the PyTorchJob (kubeflow.org/v1) of a multi-node final training as YAML."""
    from resume_ner.k8s.pytorchjob import build_pytorchjob, render_pytorchjob_yaml

    config = load_config_from_args(args)
    gpus = config.pipeline.gpu_count if args.gpus is None else args.gpus
    if args.train_args:
        given = [
            flag
            for flag, value in (
                ("--data-asset", args.data_asset),
                ("--output-dir", args.output_dir),
                ("--config-dir-in-pod", args.config_dir_in_pod),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} and training arguments after `--` exclude each other: pass the "
                "entrypoint's arguments after `--`, or build them with these options"
            )
        train_args = list(args.train_args)
    else:
        train_args = _training_arguments(args, config, gpus)
    if not config.pipeline.volume_claim:
        print(
            f"warning: pipeline.volume_claim is not set; the paths under {config.pipeline.volume_mount_path} "
            "must exist in the image",
            file=sys.stderr,
        )
    nproc = int(args.nproc_per_node) if args.nproc_per_node.isdigit() else args.nproc_per_node
    job = build_pytorchjob(
        config,
        name=args.name,
        namespace=args.namespace,
        replicas=args.replicas,
        nproc_per_node=nproc,
        gpus_per_replica=gpus,
        args=train_args,
        image=args.image,
        elastic=args.elastic,
    )
    print(render_pytorchjob_yaml(job), end="")
    return 0


def _training_arguments(args: argparse.Namespace, config: Any, gpus: int) -> list[str]:
    """The entrypoint's arguments: pod paths (default: under the volume), then the ``--set`` overrides.

    With GPUs, ``training.device=cuda`` comes first (your ``--set`` wins), so a pod without a usable GPU fails
    instead of training on CPU.
    """
    mount = config.pipeline.volume_mount_path.rstrip("/")
    train_args = [
        "--config-dir",
        args.config_dir_in_pod or f"{mount}/config",
        "--data-asset",
        args.data_asset or f"{mount}/data",
        "--output-dir",
        args.output_dir or f"{mount}/runs/final",
    ]
    overrides = (["training.device=cuda"] if gpus > 0 and config.pipeline.gpu else []) + list(args.overrides)
    for item in overrides:
        train_args += ["--set", item]
    return train_args


def cmd_inferenceservice_render(args: argparse.Namespace) -> int:
    """Print the KServe InferenceService (serving.kserve.io/v1beta1) that serves a registered version's MLflow model
    as YAML."""
    from resume_ner.k8s.serving import (
        MLSERVER_RUNTIME,
        build_inference_service,
        render_inference_service_yaml,
        storage_uri_of,
    )

    config = load_config_from_args(args)
    storage_uri = storage_uri_of(args.storage_uri, artifacts_destination=args.artifacts_destination)
    if args.runtime == "mlserver" and args.serving_runtime == MLSERVER_RUNTIME:
        print(
            f"warning: KServe's {MLSERVER_RUNTIME} image has neither resume-ner nor torch and installs nothing at "
            "start: give --serving-runtime, a ServingRuntime whose MLServer image has resume-ner installed",
            file=sys.stderr,
        )
    service = build_inference_service(
        config,
        name=args.name,
        storage_uri=storage_uri,
        namespace=args.namespace,
        runtime=args.runtime,
        image=args.image,
        service_account=args.service_account,
        deployment_mode=args.deployment_mode,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        workers=args.workers,
        cpu_request=args.cpu_request,
        cpu_limit=args.cpu_limit,
        memory_request=args.memory_request,
        memory_limit=args.memory_limit,
        serving_runtime=args.serving_runtime,
        mlflow_secret=args.mlflow_secret,
    )
    print(render_inference_service_yaml(service), end="")
    return 0


def _elastic(text: str) -> tuple[int, int]:
    """``MIN:MAX`` as two node counts."""
    low, separator, high = text.partition(":")
    if not separator or not low.strip().isdigit() or not high.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN:MAX node counts, e.g. 2:4")
    return int(low), int(high)


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``k8s pytorchjob render`` and ``k8s inferenceservice render``."""
    k8s = subparsers.add_parser(
        "k8s",
        help="Kubernetes resources: the PyTorchJob of multi-node final training, the KServe InferenceService",
        description="Kubernetes resources of resume-ner.",
    )
    resources = k8s.add_subparsers(dest="k8s_command", metavar="RESOURCE", required=True)
    pytorchjob = resources.add_parser(
        "pytorchjob",
        help="Kubeflow Training Operator PyTorchJob (final training)",
        description="The PyTorchJob of a multi-node final training.",
    )
    commands = pytorchjob.add_subparsers(dest="pytorchjob_command", metavar="COMMAND", required=True)

    render = commands.add_parser(
        "render",
        parents=parents,
        help=cmd_render.__doc__,
        description=(cmd_render.__doc__ or "") + " Image, GPU placement, resources, Secrets and volume come from the "
        "pipeline config section; without `--`, the --set overrides are also passed to the training in the pods.",
        epilog="example: resume-ner k8s pytorchjob render --replicas 3 --set pipeline.volume_claim=resume-ner-data "
        "| kubectl apply -f -",
    )
    render.add_argument("--name", default="resume-ner-final-train", help="job name (default: resume-ner-final-train)")
    render.add_argument(
        "--namespace",
        default="kubeflow",
        help="namespace of the volume and the trainer account: kubeflow (standalone KFP, the "
        "default) or your Kubeflow profile's (manifests/README.md)",
    )
    render.add_argument("--replicas", type=int, default=2, help="nodes: 1 Master + N-1 Workers (default: 2)")
    render.add_argument("--nproc-per-node", default="1", help="processes per node: N, auto, gpu or cpu (default: 1)")
    render.add_argument("--gpus", type=int, default=None, help="GPUs per node (default: pipeline.gpu_count)")
    render.add_argument("--image", help="image (default: $RESUME_NER_IMAGE, else pipeline.image)")
    render.add_argument(
        "--elastic",
        type=_elastic,
        metavar="MIN:MAX",
        help="elastic training between MIN and MAX nodes (c10d rendezvous)",
    )
    pod = render.add_argument_group("training arguments (or give the entrypoint's own after `--`)")
    pod.add_argument("--data-asset", help="data in the pods (default: <pipeline.volume_mount_path>/data)")
    pod.add_argument("--output-dir", help="output in the pods (default: <pipeline.volume_mount_path>/runs/final)")
    pod.add_argument(
        "--config-dir-in-pod", help="config directory in the pods (default: <pipeline.volume_mount_path>/config)"
    )
    render.add_argument(
        "train_args", nargs="*", metavar="-- ARG", help="arguments of python -m resume_ner.cli.train, verbatim"
    )
    render.set_defaults(func=cmd_render)
    _register_inferenceservice(resources, parents)


def _register_inferenceservice(
    resources: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``k8s inferenceservice render``."""
    inferenceservice = resources.add_parser(
        "inferenceservice",
        help="KServe InferenceService (serving a registered version)",
        description="The KServe InferenceService that serves a registered version's MLflow model.",
    )
    commands = inferenceservice.add_subparsers(dest="inferenceservice_command", metavar="COMMAND", required=True)
    render = commands.add_parser(
        "render",
        parents=parents,
        help=cmd_inferenceservice_render.__doc__,
        description=(cmd_inferenceservice_render.__doc__ or "")
        + " By default a custom predictor: the project image runs mlflow models serve on the model that KServe's "
        "storage initializer downloads from --storage-uri to /mnt/models; nothing is installed at start. The "
        "image comes from --image, else $RESUME_NER_IMAGE, else pipeline.image.",
        epilog="example: resume-ner k8s inferenceservice render --storage-uri "
        "wasbs://mlflow@myaccount.blob.core.windows.net/mlflow/1/RUN_ID/artifacts/mlflow_model | kubectl apply -f -",
    )
    render.add_argument(
        "--storage-uri",
        required=True,
        metavar="URI",
        help="where the registered version's MLflow model is stored (its runs:/ source as the tracking server "
        "resolves it, manifests/README.md): s3://, gs://, pvc://CLAIM/PATH, "
        "https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH, wasbs://..., or mlflow-artifacts:/PATH with "
        "--artifacts-destination; no credentials in it",
    )
    render.add_argument(
        "--artifacts-destination",
        metavar="URI",
        help="the tracking server's --artifacts-destination, for an mlflow-artifacts:/ storage URI",
    )
    render.add_argument("--name", default="resume-ner", help="InferenceService name (default: resume-ner)")
    render.add_argument(
        "--namespace", default="resume-ner-serving", help="namespace (default: resume-ner-serving, manifests/serving)"
    )
    render.add_argument("--image", help="image (default: $RESUME_NER_IMAGE, else pipeline.image)")
    render.add_argument(
        "--runtime",
        choices=("custom", "mlserver"),
        default="custom",
        help="custom: the project image runs mlflow models serve (default); mlserver: predictor.model with "
        "modelFormat mlflow and protocol v2, run by --serving-runtime",
    )
    render.add_argument(
        "--serving-runtime",
        default="kserve-mlserver",
        help="the ServingRuntime of --runtime mlserver (default: KServe's kserve-mlserver)",
    )
    render.add_argument(
        "--deployment-mode",
        choices=("RawDeployment", "Serverless"),
        default="RawDeployment",
        help="RawDeployment (a Deployment, Service and HPA; the default) or Serverless (Knative)",
    )
    render.add_argument(
        "--service-account",
        default="resume-ner-serving",
        help="the pods' account, which lists the storage credentials' Secrets (default: resume-ner-serving)",
    )
    render.add_argument("--min-replicas", type=int, default=1, help="fewest replicas (default: 1)")
    render.add_argument("--max-replicas", type=int, default=3, help="most replicas (default: 3)")
    render.add_argument(
        "--workers",
        type=int,
        default=SERVER_WORKERS,
        help=f"server processes per replica, each with its own model (default: {SERVER_WORKERS})",
    )
    render.add_argument("--cpu-request", default="1", help="CPU request (default: 1)")
    render.add_argument("--cpu-limit", default="2", help="CPU limit (default: 2)")
    render.add_argument("--memory-request", default="3Gi", help="memory request (default: 3Gi: two workers' models)")
    render.add_argument("--memory-limit", default="6Gi", help="memory limit (default: 6Gi)")
    render.add_argument(
        "--mlflow-secret",
        metavar="SECRET",
        help="give the server the tracking URI and this Secret's MLflow credentials (default: none; the server "
        "reads only /mnt/models)",
    )
    render.set_defaults(func=cmd_inferenceservice_render)
