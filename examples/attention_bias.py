"""Knowledge-guided attention: an additive attention bias from an external source (entity links).

Run from the repository root:

    python examples/attention_bias.py

Every encoder block takes ``attention_bias``, a float tensor ``[batch, heads or 1, n, n]``
added to the attention scores before the softmax. Here it comes from a toy knowledge source:
each sequence holds six entity tokens, three of each of two types, and ten "mention" tokens; each
mention is linked to one entity (the link is known only outside the text, e.g. from an entity linker). The task is
to tag every mention with the type of its linked entity. The bias adds ``+LINK_BIAS`` where
mention ``i`` is linked to entity ``j``, so attention can look the answer up; the same model
given a zero bias (no links) can only guess. Two identical models are trained on the same data,
one with the links and one without, and their mention accuracy is printed.
"""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasllm import training
from kerasllm.layers import TransformerEmbedding, TransformerEncoderBlock

LENGTH, HIDDEN, HEADS = 16, 64, 4
LINK_BIAS = 5.0
MENTIONS = range(1, 11)  # token ids of mentions; entities of type 1 and type 2 follow
TYPE_1, TYPE_2 = range(11, 21), range(21, 31)
VOCAB = 31


def make_data(count, seed):
    """Token ids, link bias [count, 1, n, n] and labels (0 = entity, 1/2 = type of the mention's entity)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, LENGTH), np.int32)
    links = np.zeros((count, 1, LENGTH, LENGTH), np.float32)
    labels = np.zeros((count, LENGTH), np.int32)
    for row in range(count):
        positions = rng.permutation(LENGTH)
        entities, mentions = positions[:6], positions[6:]
        types = np.array([1, 1, 1, 2, 2, 2])[rng.permutation(6)]  # as many of each type: the text alone says 50/50
        ids[row, entities] = [rng.choice(TYPE_1 if t == 1 else TYPE_2) for t in types]
        ids[row, mentions] = rng.choice(MENTIONS, size=len(mentions))
        for mention in mentions:
            target = rng.integers(len(entities))
            links[row, 0, mention, entities[target]] = LINK_BIAS
            labels[row, mention] = types[target]
    return ids, links, labels


def build_model():
    """Embeddings, two encoder blocks that take the bias as a model input, and a per-token classifier."""
    ids = keras.Input((LENGTH,), dtype=tf.int32, name="input_ids")
    bias = keras.Input((1, LENGTH, LENGTH), dtype=tf.float32, name="attention_bias")
    x = TransformerEmbedding(VOCAB, HIDDEN, max_position=LENGTH, dropout=0.0, name="embeddings")(ids)
    for i in range(2):
        block = TransformerEncoderBlock(HEADS, 4 * HIDDEN, dropout=0.0, attention_dropout=0.0, name=f"encoder_layer_{i}")
        x = block(x, attention_bias=bias)
    logits = keras.layers.Dense(3, name="classifier")(x)
    return keras.Model({"input_ids": ids, "attention_bias": bias}, logits)


def mention_accuracy(model, ids, bias, labels):
    predicted = model.predict({"input_ids": ids, "attention_bias": bias}, verbose=0).argmax(-1)
    mentions = labels > 0
    return float((predicted[mentions] == labels[mentions]).mean())


def main():
    train_ids, train_links, train_labels = make_data(3000, seed=0)
    test_ids, test_links, test_labels = make_data(500, seed=1)
    epochs, batch = 6, 64
    results = {}
    for name, use_links in (("with entity links", True), ("without (zero bias)", False)):
        training.set_seed(0)
        model = build_model()
        model.compile(
            optimizer=training.create_optimizer(2e-3, num_train_steps=epochs * len(train_ids) // batch, warmup_ratio=0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        train_bias = train_links if use_links else np.zeros_like(train_links)
        test_bias = test_links if use_links else np.zeros_like(test_links)
        model.fit({"input_ids": train_ids, "attention_bias": train_bias}, train_labels, batch_size=batch,
                  epochs=epochs, verbose=0)
        results[name] = mention_accuracy(model, test_ids, test_bias, test_labels)
        print(f"{name}: mention accuracy {results[name]:.3f}")
    print("without the links the text leaves each mention 50/50 between the two types (chance = 0.5)")


if __name__ == "__main__":
    main()
