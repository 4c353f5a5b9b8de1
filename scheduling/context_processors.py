"""Template context for the admin: where the live view (Flower) is."""

from scheduling import conf


def links(request):
    return {"flower_url": conf.get("FLOWER_URL")}
