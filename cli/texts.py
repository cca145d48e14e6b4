"""What the menu says, in English and French (by the locale); the subcommands speak English."""
from __future__ import annotations

import os

TEXTS = {
    "en": {
        "menu": ["Ask a question (follow-ups continue the conversation; /new starts another)",
                 "Add knowledge (ChromaDB)",
                 "Give learning data (learning_data.txt)",
                 "Update the model with the new data (fine-tuning)", "Quit",
                 "Add documents: a file or a folder (.txt .md .html .pdf .docx .jsonl)",
                 "Open the feedback page (chat, rate and compare answers in a browser)",
                 "Open the monitoring dashboard (versions, evaluations, feedback, latency)",
                 "Learn from my feedback (reward model, DPO or KTO, through the gate)"],
        "choice": "Your choice (1-9): ",
        "bad_choice": "Please type a number from 1 to 9.",
        "path": "File or folder: ",
        "question": "Question: ",
        "conversation": "(conversation {id}, {questions} question(s) so far: /new starts another)",
        "new_conversation": "(a new conversation)",
        "empty": "Nothing typed: back to the menu.",
        "text": "Text (finish with an empty line):",
        "id": "Id (Enter for a generated one): ",
        "replace": "A document '{id}' exists already. Replace it? [y/N] ",
        "added": "Added '{id}' to the knowledge base ({chunks} chunk(s)).",
        "learned": "Saved as {id} in learning_data.txt ({entries} entries): questions about it are answered from it "
                   "now; choose 4 to teach it to the model itself. ('python cli_app.py learned' lists the entries, "
                   "'forget ID' takes one back.)",
        "too_short": "This entry states no fact to teach (fewer than 3 words): questions find it, fine-tuning "
                     "leaves it out.",
        "forgotten": "Took back {id}: \"{text}\". Questions no longer find it, and later fine-tunings no longer "
                     "teach it ({entries} entries left).",
        "no_entries": "learning_data.txt has no entries yet: give some with menu 3 or 'python cli_app.py learn TEXT'.",
        "interrupted": "\nStopped: back to the menu.",
        "loading": "(loading the models, once...)",
        "sources": "Sources:",
        "no_sources": "(no passage of the knowledge base scored {threshold} or more)",
        "unchanged": "A version was already trained on the same learning data with the same settings: nothing to do "
                     "(--force trains anyway; 'python cli_app.py models list' shows the versions).",
        "finetuned": "Fine-tuned in {seconds:.0f} s ({steps} steps): {entries} new entries, asked about in "
                     "{questions} ways.",
        "taught": "Taught facts answered without the knowledge base, asked in other words: {before:.0%} -> "
                  "{after:.0%}. General questions answered: {general_before:.0%} -> {general_after:.0%}.",
        "not_usable": "The model itself answers few of the taught facts: questions about them are still answered "
                      "from the knowledge base (menu 1).",
        "promoted": "The gate checked version {version} against {champion}: no metric regressed. It is now the model "
                    "in use.",
        "promoted_unchecked": "Version {version} is now the model in use (the gate is off: APPRENTI_GATE=false).",
        "refused": "The gate refused version {version}: {failed}. The model in use stays {champion}; "
                   "'python cli_app.py models use {version} --force' uses it anyway.",
        "ingested": "Documents: {added} added, {updated} updated, {unchanged} unchanged, {removed} removed "
                    "({chunks} chunks written).",
        "skipped": "Skipped ({count}):",
        "gone": "{count} document(s) whose file is gone were kept: ingest again with --prune to remove them.",
        "page": "The feedback page is at http://{host}:{port} (Ctrl-C here stops it and returns to the menu).",
        "dashboard": "The monitoring dashboard is at http://{host}:{port} (Ctrl-C here stops it and returns to the "
                     "menu).",
        "rate": "Rate this answer: g = good, b = bad, Enter = skip: ",
        "rate_keys": {"g": "good", "b": "bad"},
        "wanted": "The answer you wanted (Enter to skip): ",
        "thanks": "Thank you: your feedback is saved.",
        "learned_from": "Learned from {entries} feedback entries ({pairs} pairs, {rated} rated answers) with {method}.",
        "reward_trained": "Reward model {version}: ranks {accuracy:.0%} of {measured} right ({verdict}).",
        "trained": "Trained in {seconds:.0f} s ({steps} steps on {rows} {what}, {replayed} replayed from earlier runs).",
        "bye": "Goodbye.",
    },
    "fr": {
        "menu": ["Poser une question (les suivantes continuent la conversation ; /new en commence une autre)",
                 "Ajouter une connaissance (ChromaDB)",
                 "Fournir des données pour l'apprentissage (fichier learning_data.txt)",
                 "Mettre à jour le modèle avec les nouvelles données (fine-tuning)", "Quitter",
                 "Ajouter des documents : un fichier ou un dossier (.txt .md .html .pdf .docx .jsonl)",
                 "Ouvrir la page d'avis (discuter, noter et comparer des réponses dans un navigateur)",
                 "Ouvrir le tableau de bord (versions, évaluations, avis, latence)",
                 "Apprendre de mes avis (modèle de récompense, DPO ou KTO, avec contrôle)"],
        "choice": "Votre choix (1-9) : ",
        "bad_choice": "Tapez un nombre de 1 à 9.",
        "path": "Fichier ou dossier : ",
        "question": "Question : ",
        "conversation": "(conversation {id}, {questions} question(s) jusqu'ici : /new en commence une autre)",
        "new_conversation": "(une nouvelle conversation)",
        "empty": "Rien de saisi : retour au menu.",
        "text": "Texte (terminez par une ligne vide) :",
        "id": "Identifiant (Entrée pour en générer un) : ",
        "replace": "Un document '{id}' existe déjà. Le remplacer ? [o/N] ",
        "added": "'{id}' ajouté à la base de connaissances ({chunks} morceau(x)).",
        "learned": "Enregistré sous {id} dans learning_data.txt ({entries} entrées) : les questions à ce sujet y "
                   "trouvent la réponse dès maintenant ; choisissez 4 pour l'apprendre au modèle lui-même. "
                   "('python cli_app.py learned' liste les entrées, 'forget ID' en retire une.)",
        "too_short": "Cette entrée n'énonce aucun fait à apprendre (moins de 3 mots) : les questions la "
                     "trouvent, le fine-tuning la laisse de côté.",
        "forgotten": "{id} retirée : « {text} ». Les questions ne la trouvent plus et les prochains fine-tunings ne "
                     "l'apprennent plus ({entries} entrées restantes).",
        "no_entries": "learning_data.txt n'a pas encore d'entrée : donnez-en par le menu 3 ou 'python cli_app.py "
                      "learn TEXTE'.",
        "interrupted": "\nInterrompu : retour au menu.",
        "loading": "(chargement des modèles, une seule fois...)",
        "sources": "Sources :",
        "no_sources": "(aucun passage de la base n'atteint le score {threshold})",
        "unchanged": "Une version a déjà été entraînée sur les mêmes données avec les mêmes réglages : rien à faire "
                     "(--force entraîne quand même ; 'python cli_app.py models list' montre les versions).",
        "finetuned": "Fine-tuning fait en {seconds:.0f} s ({steps} pas) : {entries} nouvelles entrées, demandées de "
                     "{questions} façons.",
        "taught": "Faits appris auxquels le modèle répond sans la base de connaissances, questions formulées "
                  "autrement : {before:.0%} -> {after:.0%}. Questions générales : {general_before:.0%} -> "
                  "{general_after:.0%}.",
        "not_usable": "Le modèle lui-même répond à peu des faits appris : les questions à leur sujet trouvent "
                      "toujours la réponse dans la base de connaissances (menu 1).",
        "promoted": "Le contrôle a comparé la version {version} à {champion} : aucune mesure n'a régressé. C'est "
                    "désormais le modèle utilisé.",
        "promoted_unchecked": "La version {version} est désormais le modèle utilisé (contrôle désactivé : "
                              "APPRENTI_GATE=false).",
        "refused": "Le contrôle a refusé la version {version} : {failed}. Le modèle utilisé reste {champion} ; "
                   "'python cli_app.py models use {version} --force' l'utilise quand même.",
        "ingested": "Documents : {added} ajouté(s), {updated} mis à jour, {unchanged} inchangé(s), "
                    "{removed} retiré(s) ({chunks} morceaux écrits).",
        "skipped": "Ignoré(s) ({count}) :",
        "gone": "{count} document(s) dont le fichier a disparu sont gardés : relancez avec --prune pour les retirer.",
        "page": "La page d'avis est à http://{host}:{port} (Ctrl-C ici l'arrête et revient au menu).",
        "dashboard": "Le tableau de bord est à http://{host}:{port} (Ctrl-C ici l'arrête et revient au menu).",
        "rate": "Notez cette réponse : b = bonne, m = mauvaise, Entrée = passer : ",
        "rate_keys": {"b": "good", "m": "bad"},
        "wanted": "La réponse que vous attendiez (Entrée pour passer) : ",
        "thanks": "Merci : votre avis est enregistré.",
        "learned_from": "Appris de {entries} avis ({pairs} paires, {rated} réponses notées) par {method}.",
        "reward_trained": "Modèle de récompense {version} : classe {accuracy:.0%} des {measured} correctement "
                          "({verdict}).",
        "trained": "Entraîné en {seconds:.0f} s ({steps} étapes sur {rows} {what}, {replayed} repris de runs "
                   "antérieurs).",
        "bye": "Au revoir.",
    },
}


def interface_language() -> str:
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if os.environ.get(variable):
            return "fr" if os.environ[variable].lower().startswith("fr") else "en"
    return "en"
