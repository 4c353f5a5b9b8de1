"""kombu's filesystem transport (the embedded default broker), with messages written whole.

kombu creates a message file under its final name and then writes it, so a consumer
polling the folder can take the file while it is still empty; the worker then dies on
``JSONDecodeError('Expecting value: line 1 column 1 (char 0)')``. Seen here with one
worker and Flower's control messages. This channel writes each message under a name the
consumers skip and renames it into place, which is atomic on POSIX. Selected in the
settings (``CELERY_BROKER_TRANSPORT``) whenever the broker URL is ``filesystem://``.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    """kombu's filesystem channel, writing each message file whole."""

    def _put(self, queue, payload, **kwargs):
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Consumers take only names of the form "<id>.<queue>.msg"; this one is skipped.
        partial = os.path.join(self.data_folder_out, f"{name}.partial")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    """The embedded broker: kombu's filesystem transport with :class:`Channel`."""

    Channel = Channel


def filesystem_settings(folder) -> dict:
    """The Celery settings (``CELERY_`` names) of the embedded broker in ``folder``: this
    transport and its queue, control and processed folders (created here).

    A project that wants no broker server (development, one machine, one worker) writes
    ``globals().update(filesystem_settings(BASE_DIR / "broker"))`` in its settings.
    """
    folders = {sub: os.path.join(folder, sub) for sub in ("queue", "control", "processed")}
    for path in folders.values():
        os.makedirs(path, exist_ok=True)
    return {
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_BROKER_TRANSPORT": "scheduling.broker:Transport",
        "CELERY_BROKER_TRANSPORT_OPTIONS": {
            "data_folder_in": folders["queue"],
            "data_folder_out": folders["queue"],
            "control_folder": folders["control"],
            "processed_folder": folders["processed"],
            "store_processed": False,
            # Workers look for new messages this often (seconds).
            "polling_interval": 0.1,
        },
    }
