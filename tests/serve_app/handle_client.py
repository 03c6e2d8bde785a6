"""Another Serve application that uses the service through its Python handle, as a user's would
(docs/api.md, "Python handle"): inside a replica, awaiting the responses, catching the service's
errors by their ``pipelines.errors`` class."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from pipelines.errors import BackgroundRemovalError


@serve.deployment(ray_actor_options={"num_cpus": 0.05})
class HandleClient:
    def __init__(self, target_app: str):
        self._target_app = target_app

    async def __call__(self, image: bytes) -> dict[str, Any]:
        handle = serve.get_app_handle(self._target_app)  # here, not in __init__: the apps start together
        result = await handle.remove_background.remote(image, filename="cat.png", refine_foreground=False)
        try:
            await handle.remove_background.remote(b"not an image at all")
        except BackgroundRemovalError as error:
            refused = error.cause.to_body()  # type: ignore[attr-defined]  # Ray's wrapper keeps the original
        else:
            refused = {}
        return {
            "png": result.png,
            "filename": result.filename,
            "model_version": result.processing_info.model_version,
            "foreground_refined": result.processing_info.foreground_refined,
            "refused": refused,
        }


def build_handle_client(args: dict[str, Any]) -> Application:
    return HandleClient.bind(args.get("target_app", "birefnet"))
