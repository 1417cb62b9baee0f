"""Build progress: an updating line on a terminal, plain lines in logs."""

import io

from rayhpc.containers.engine import _show_build_chunk
from rayhpc.containers.progress import Progress


def feed(progress, chunks):
    for chunk in chunks:
        _show_build_chunk(chunk, progress)
    progress.done()


CHUNKS = [{"stream": "Step 1/2 : FROM base\n"}, {"stream": " ---> abc123\n"},
          {"stream": "Step 2/2 : RUN pip install tqdm\n"}, {"stream": "Collecting tqdm\n"},
          {"stream": "Successfully installed tqdm\n"}]


def test_plain_output_keeps_every_line():
    out = io.StringIO()
    feed(Progress(out, tty=False), CHUNKS)
    assert out.getvalue().splitlines() == [
        "Step 1/2 : FROM base", " ---> abc123", "Step 2/2 : RUN pip install tqdm",
        "Collecting tqdm", "Successfully installed tqdm"]


def test_terminal_output_redraws_one_line_and_keeps_one_per_step():
    out = io.StringIO()
    feed(Progress(out, tty=True), CHUNKS)
    text = out.getvalue()
    assert "\r\x1b[K" in text
    kept = [line.split("\r\x1b[K")[-1] for line in text.split("\n") if line]
    assert [k.split(" (")[0] for k in kept] == ["  done Step 1/2 : FROM base",
                                               "  done Step 2/2 : RUN pip install tqdm"]
    assert "| Collecting tqdm" in text


def test_failure_shows_the_last_output_even_on_a_terminal():
    progress = Progress(io.StringIO(), tty=True)
    try:
        feed(progress, [*CHUNKS[:4], {"error": "pip failed", "errorDetail": {"message":
                                                                             "exit code 1"}}])
    except Exception as exc:  # UserError
        assert "image build failed: exit code 1" in str(exc)
        assert "Collecting tqdm" in str(exc)
    else:
        raise AssertionError("an error chunk must fail the build")
