"""python -m minilm.serve's start, in process: the port it listens on, and the errors before it serves."""

from __future__ import annotations

import pytest
import torch

from minilm.serve.__main__ import bind, main


def test_a_second_server_on_the_same_port_is_one_error_line_and_exit_2(capsys):
    """Two servers started 0.5 s apart on one port: both bound it (SO_REUSEADDR, and neither listening
    yet while the model loads), uvloop swallowed the second's EADDRINUSE, and the second ran forever on
    no socket. The first now listens from the start, so the second stops at once."""
    first = bind("127.0.0.1", 0)
    port = first.getsockname()[1]
    try:
        with pytest.raises(ValueError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: .*; choose another --host"):
            bind("127.0.0.1", port)
        assert main(["--port", str(port)]) == 2
    finally:
        first.close()
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and err.count("\n") == 1, err


@pytest.mark.slow  # loads the encoder twice (the server's, and the heads' stock backbone)
def test_heads_that_are_an_encoder_folder_are_named_as_heads(checkpoint_dir, capsys):
    threads = torch.get_num_threads()
    assert main(["--port", "0", "--heads", str(checkpoint_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "is an encoder checkpoint, not a heads folder; --heads takes a folder" in err and "--model" not in err
    assert torch.get_num_threads() == threads  # the server's loading setting is undone on the way out
