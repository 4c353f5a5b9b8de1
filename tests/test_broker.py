"""The embedded default broker: kombu's filesystem transport, messages written whole."""

from pathlib import Path

import pytest
from django.conf import settings
from kombu import Connection

from project.celery import app
from scheduling import broker


@pytest.fixture
def connection(tmp_path: Path):
    folder, control = tmp_path / "queue", tmp_path / "control"
    folder.mkdir()
    control.mkdir()
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(control),
    }
    with Connection("filesystem://", transport=broker.Transport, transport_options=options) as c:
        yield c, folder


def test_a_message_file_appears_only_once_written_and_is_read_back(connection, monkeypatch):
    conn, folder = connection
    queue = conn.SimpleQueue("jobs")
    seen_while_writing: list[list[str]] = []
    real_dumps = broker.dumps

    def dumps(payload):  # runs while the message is being written
        seen_while_writing.append([p.name for p in folder.glob("*.jobs.msg")])
        return real_dumps(payload)

    monkeypatch.setattr(broker, "dumps", dumps)
    # A file still being written has a name consumers skip.
    (folder / "1_partial.jobs.msg.partial").write_bytes(b"")
    queue.put({"job_id": 7})
    names = sorted(p.name for p in folder.iterdir())
    [written] = [n for n in names if n.endswith(".jobs.msg")]
    assert (folder / written).stat().st_size > 0
    assert seen_while_writing == [[]], "a consumer could have taken an unwritten file"
    message = queue.get(timeout=2)
    assert message.payload == {"job_id": 7}
    message.ack()
    with pytest.raises(queue.Empty):
        queue.get(timeout=0.2)
    queue.close()


@pytest.mark.skipif(
    not settings.CELERY_BROKER_URL.startswith("filesystem://"), reason="embedded broker only"
)
def test_the_app_uses_it_for_the_embedded_broker():
    with app.connection_for_write() as conn:
        assert conn.transport_cls is broker.Transport or isinstance(
            conn.transport, broker.Transport
        )
