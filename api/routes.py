"""The route table: every endpoint of the API, by path.

Each endpoint lives with its resource (api.images, api.thumbnails, api.actions, api.batch,
api.status, api.metrics, api.docs, api.access); its docstring's YAML, after `---`, is its
OpenAPI entry (/api/openapi.json). Handlers parse and check the request, run the reads of the
models.*_reads modules through the context's reader, and shape the answer with api.serialize;
errors are raised as ApiError subclasses.
"""

from __future__ import annotations

from starlette.endpoints import HTTPEndpoint
from starlette.routing import Route

from api import access, actions, batch, docs, images, metrics, status, thumbnails


class Images(HTTPEndpoint):
    """One route for both methods, so a 405 names both in its Allow header."""

    get = staticmethod(images.list_images)
    post = staticmethod(images.create_image)


class OneImage(HTTPEndpoint):
    get = staticmethod(images.get_image)
    delete = staticmethod(actions.delete_image)


ROUTES = [
    Route("/api/ping", status.ping, methods=["GET"]),
    Route("/api/images", Images),
    # Before /api/images/{image_id}, which would take "batch" for an id.
    Route("/api/images/batch", batch.batch_images, methods=["POST"]),
    Route("/api/images/{image_id}", OneImage),
    Route("/api/images/{image_id}/original", actions.get_original, methods=["GET"]),
    Route("/api/images/{image_id}/reprocess", actions.reprocess_image, methods=["POST"]),
    Route("/api/images/{image_id}/recaption", actions.recaption_image, methods=["POST"]),
    Route("/api/images/{image_id}/thumbnails/{size}", thumbnails.get_thumbnail, methods=["GET"]),
    Route("/api/stats", status.get_stats, methods=["GET"]),
    Route("/api/openapi.json", docs.openapi, methods=["GET"]),
    Route("/api/docs", docs.docs, methods=["GET"]),
    Route("/healthz", status.healthz, methods=["GET"]),
    Route("/metrics", metrics.get_metrics, methods=["GET"]),
    Route("/api/session", access.sign_in, methods=["POST"]),
]
