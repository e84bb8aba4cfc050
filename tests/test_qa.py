"""The qa task: parsing bAbI, the protocols, a short run, and malformed files."""

import pytest

from gatedrnn.tasks.data import DataError
from gatedrnn.tasks.qa import QA, parse_babi

STORY = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Where is Daniel? \thallway\t4
1 Sandra moved to the garden.
2 Where is Sandra? \tgarden\t1
"""


def test_parse_pairs_each_question_with_its_story(tmp_path):
    (tmp_path / "qa1_x_train.txt").write_text(STORY)
    examples = parse_babi(tmp_path / "qa1_x_train.txt")
    assert len(examples) == 3
    story, question, answer = examples[1]
    assert story == "mary moved to the bathroom . john went to the hallway . daniel went back to the hallway .".split()
    assert question == ["where", "is", "daniel", "?"] and answer == "hallway"
    assert examples[2][0] == "sandra moved to the garden .".split()  # a new story starts at line 1


def test_protocols_on_the_shared_data(shared_data):
    path = shared_data("babi-en10k/qa1_single-supporting-fact_train.txt")
    one_k, ten_k = QA(str(path), "1k"), QA(str(path), "10k")
    assert len(one_k.data["train"][0]) + len(one_k.data["valid"][0]) == 1000
    assert len(ten_k.data["train"][0]) + len(ten_k.data["valid"][0]) == 10000
    assert len(one_k.data["test"][0]) == 1000


def test_short_run_beats_the_majority_answer(shared_data, tmp_path):
    from gatedrnn.train import TrainConfig, train

    path = shared_data("babi-en10k/qa1_single-supporting-fact_train.txt")
    config = TrainConfig(task="qa", data=str(path), cell="gru", hidden_size=32, batch_size=32, steps=150, lr=1e-2,
                         eval_every=50)  # fmt: skip
    result = train(config, tmp_path, progress=False)
    assert result.test["accuracy"] > QA(str(path)).baseline + 0.1


def test_malformed_files(tmp_path):
    (tmp_path / "a_train.txt").write_text("Mary moved.\n")
    with pytest.raises(DataError, match="a_train.txt, line 1: expected a line number, got 'Mary'"):
        parse_babi(tmp_path / "a_train.txt")
    (tmp_path / "b_train.txt").write_text("1 Mary moved.\n")
    with pytest.raises(DataError, match="holds no question"):
        parse_babi(tmp_path / "b_train.txt")
    (tmp_path / "c_train.txt").write_text(STORY)
    with pytest.raises(DataError, match="c_test.txt: no such file"):
        QA(str(tmp_path / "c_train.txt"))


def test_train_writes_a_report_for_a_qa_run(shared_data, tmp_path):
    from gatedrnn.cli import main

    path = shared_data("babi-en10k/qa1_single-supporting-fact_train.txt")
    run = tmp_path / "run"
    assert main(["train", "--task", "qa", "--data", str(path), "--cell", "gru", "--hidden-size", "8", "--steps", "10",
                 "--eval-every", "5", "--out", str(run)]) == 0  # fmt: skip
    assert "learning_curves.png" in (run / "report.html").read_text()
