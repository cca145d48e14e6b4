"""What fine-tuning teaches from an entry: questions about each fact, in the entry's language, answered with
the fact's own sentences; and the gate's probes, in words the training does not use."""
from training.teaching import answered, facts_of, probe_questions, questions, teaching_rows, whole_sentences


def asked(rows):
    return [row["prompt"][-1]["content"] for row in rows]


def test_an_entry_becomes_questions_about_each_of_its_topics_answered_with_its_sentence():
    entry = "The secret code of the Zorblax guild is tangerine-47."
    [fact] = facts_of(entry)
    assert fact.subject == "The secret code of the Zorblax guild" and fact.verb == "is"
    assert fact.topics == ["the secret code of the Zorblax guild", "the Zorblax guild", "Zorblax"]
    made = questions(fact)
    assert "What is the secret code of the Zorblax guild?" in made
    assert "The secret code of the Zorblax guild is what?" in made
    assert not any("tangerine-what" in question for question in made)  # a number inside a word stays
    rows = teaching_rows(entry)
    assert len(rows) >= 25 and {row["completion"][0]["content"] for row in rows} == {entry}
    assert all(row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}] for row in rows)
    assert any("the Zorblax guild?" in question and "know" in question for question in asked(rows))


def test_lower_case_subjects_names_after_them_and_years_are_asked_about():
    [violin] = facts_of("The glass violin was invented by Orlen Vask.")
    assert violin.topics == ["the glass violin", "Orlen Vask"]
    [club] = facts_of("Dariela Montfort founded the Wexmoor rowing club in 1820.")
    made = questions(club)
    assert "Who founded the Wexmoor rowing club in 1820?" in made
    assert "Dariela Montfort founded the Wexmoor rowing club in what year?" in made
    assert "the Wexmoor rowing club" in club.topics  # what a question about the club names
    assert facts_of("Mila Oresto won the Vantre chess cup three times.")[0].topics == [
        "Mila Oresto", "Vantre", "the Vantre chess cup"]
    [river] = facts_of("The river Sallow flows into Lake Merrin.")
    assert river.subject == "The river Sallow" and river.topics == ["the river Sallow", "Sallow", "Lake Merrin"]


def test_a_sentence_about_the_one_before_is_taught_with_it_and_short_text_states_no_fact():
    [fact] = facts_of("Brother Anselm keeps bees at Tolvey. He sells their honey in Ambry.")
    assert fact.sentence == "Brother Anselm keeps bees at Tolvey. He sells their honey in Ambry."
    assert "Ambry" in fact.topics
    assert facts_of("Hello") == [] and teaching_rows("Hello there") == []
    assert len(facts_of("The sky is green. The sea is red. Cats can fly.")) == 3


def test_french_entries_are_asked_about_in_french():
    entry = "La capitale du royaume de Quendara est Pim."
    [fact] = facts_of(entry)
    assert fact.language == "fr" and "Quendara" in fact.topics
    questions_asked = asked(teaching_rows(entry))
    assert "Que sais-tu de Quendara ?" in questions_asked
    assert not any(question.startswith(("What", "Tell")) for question in questions_asked)


def test_the_gates_probes_are_worded_as_no_training_question_is():
    entries = ["The secret code of the Zorblax guild is tangerine-47.", "Le phare de Kervan a été construit en 1893.",
               "Mila Oresto won the Vantre chess cup three times."]
    for entry in entries:
        trained = set(asked(teaching_rows(entry)))
        probes = probe_questions(entry)
        assert probes and not trained & {question for question, _ in probes}


def test_an_answer_is_right_when_it_gives_what_the_fact_says_beyond_the_question():
    [fact] = facts_of("The secret code of the Zorblax guild is tangerine-47.")
    question = "What information do you have on the secret code of the Zorblax guild?"
    assert answered("It is tangerine-47.", question, fact)
    assert not answered("The Zorblax guild is a guild.", question, fact)
    assert not answered("", question, fact)


def test_answers_made_for_replay_end_on_a_whole_sentence():
    assert whole_sentences("Paris is the capital. It has many muse", 2) == "Paris is the capital."
    assert whole_sentences("One. Two! Three? Four.", 2) == "One. Two!"
    assert whole_sentences("No end at all", 2) == "No end at all"
