"""The internal pieces other modules build on: the graph index, the status a weight rule gives."""
import keras
import pytest

import kerasnb
from kerasnb import _graph
from kerasnb.report import Status
from kerasnb.weights import Outcome


@pytest.fixture(scope="module")
def diamond():
    x = keras.Input((4,), name="x")
    a = keras.layers.Dense(3, name="a")(x)
    b = keras.layers.Dense(3, name="b")(a)
    c = keras.layers.Dense(3, name="c")(a)
    s = keras.layers.Add(name="s")([b, c])
    d = keras.layers.Add(name="d")([s, s])  # takes one tensor twice
    return keras.Model(x, [d, c], name="diamond")


def test_graph_index_connects_calls(diamond):
    index = _graph.graph_index(diamond)
    names = {id(v.node): v.name for v in index.order}
    by_name = {v.name: v for v in index.order}
    assert [v.name for v in index.order] == [v.name for v in _graph.walk(diamond)]
    assert names[id(index.producer[id(by_name["b"].outputs[0])].node)] == "b"
    assert [v.name for v in index.consumers[id(by_name["a"].outputs[0])]] == ["b", "c"]
    assert [v.name for v in index.consumers[id(by_name["s"].outputs[0])]] == ["d", "d"]
    assert [v.name for v in index.takers(by_name["a"])] == ["b", "c"]
    assert [v.name for v in index.takers(by_name["s"])] == ["d"]
    assert sorted(v.name for v in index.downstream(by_name["b"])) == ["d", "s"]
    assert {id(t) for t in diamond.outputs} == index.outputs


def test_an_outcome_kind_is_a_status():
    assert Outcome("adapted").kind is Status.ADAPTED and Outcome(Status.FOLDED).kind == "folded"
    with pytest.raises(kerasnb.errors.InvalidEdit, match=r"'kept'.*Received: kind='copied'"):
        Outcome("copied")
