"""What the menu says, in English and French (by the locale); the subcommands speak English."""
from __future__ import annotations

import os

TEXTS = {
    "en": {
        "menu": ["Ask a question", "Add knowledge (ChromaDB)",
                 "Give learning data (learning_data.txt)",
                 "Update the model with the new data (fine-tuning)", "Quit",
                 "Add documents: a file or a folder (.txt .md .html .pdf .docx .jsonl)",
                 "Open the feedback page (compare answers in a browser)"],
        "choice": "Your choice (1-7): ",
        "bad_choice": "Please type a number from 1 to 7.",
        "path": "File or folder: ",
        "question": "Question: ",
        "empty": "Nothing typed: back to the menu.",
        "text": "Text (finish with an empty line):",
        "id": "Id (Enter for a generated one): ",
        "replace": "A document '{id}' exists already. Replace it? [y/N] ",
        "added": "Added '{id}' to the knowledge base ({chunks} chunk(s)).",
        "learned": "Saved in learning_data.txt ({entries} entries). Choose 4 to fine-tune on them.",
        "interrupted": "\nStopped: back to the menu.",
        "loading": "(loading the models, once...)",
        "sources": "Sources:",
        "no_sources": "(no passage of the knowledge base scored {threshold} or more)",
        "unchanged": "Same learning data and settings as the last fine-tuning: nothing to do (--force trains anyway).",
        "finetuned": "Fine-tuned in {seconds:.0f} s. Perplexity on the learning data {before:.2f} -> {after:.2f}; "
                     "on general text {general_before:.2f} -> {general_after:.2f} (a rise means forgetting).",
        "now_using": "Now using: {model}",
        "ingested": "Documents: {added} added, {updated} updated, {unchanged} unchanged, {removed} removed "
                    "({chunks} chunks written).",
        "skipped": "Skipped ({count}):",
        "gone": "{count} document(s) whose file is gone were kept: ingest again with --prune to remove them.",
        "page": "The feedback page is at http://{host}:{port} (Ctrl-C here stops it and returns to the menu).",
        "rate": "Rate this answer: g = good, b = bad, Enter = skip: ",
        "rate_keys": {"g": "good", "b": "bad"},
        "wanted": "The answer you wanted (Enter to skip): ",
        "thanks": "Thank you: your feedback is saved.",
        "bye": "Goodbye.",
    },
    "fr": {
        "menu": ["Poser une question", "Ajouter une connaissance (ChromaDB)",
                 "Fournir des données pour l'apprentissage (fichier learning_data.txt)",
                 "Mettre à jour le modèle avec les nouvelles données (fine-tuning)", "Quitter",
                 "Ajouter des documents : un fichier ou un dossier (.txt .md .html .pdf .docx .jsonl)",
                 "Ouvrir la page d'avis (comparer des réponses dans un navigateur)"],
        "choice": "Votre choix (1-7) : ",
        "bad_choice": "Tapez un nombre de 1 à 7.",
        "path": "Fichier ou dossier : ",
        "question": "Question : ",
        "empty": "Rien de saisi : retour au menu.",
        "text": "Texte (terminez par une ligne vide) :",
        "id": "Identifiant (Entrée pour en générer un) : ",
        "replace": "Un document '{id}' existe déjà. Le remplacer ? [o/N] ",
        "added": "'{id}' ajouté à la base de connaissances ({chunks} morceau(x)).",
        "learned": "Enregistré dans learning_data.txt ({entries} entrées). Choisissez 4 pour le fine-tuning.",
        "interrupted": "\nInterrompu : retour au menu.",
        "loading": "(chargement des modèles, une seule fois...)",
        "sources": "Sources :",
        "no_sources": "(aucun passage de la base n'atteint le score {threshold})",
        "unchanged": "Mêmes données et réglages qu'au dernier fine-tuning : rien à faire (--force entraîne quand même).",
        "finetuned": "Fine-tuning fait en {seconds:.0f} s. Perplexité sur les données {before:.2f} -> {after:.2f} ; "
                     "sur un texte général {general_before:.2f} -> {general_after:.2f} (une hausse signale un oubli).",
        "now_using": "Modèle utilisé : {model}",
        "ingested": "Documents : {added} ajouté(s), {updated} mis à jour, {unchanged} inchangé(s), "
                    "{removed} retiré(s) ({chunks} morceaux écrits).",
        "skipped": "Ignoré(s) ({count}) :",
        "gone": "{count} document(s) dont le fichier a disparu sont gardés : relancez avec --prune pour les retirer.",
        "page": "La page d'avis est à http://{host}:{port} (Ctrl-C ici l'arrête et revient au menu).",
        "rate": "Notez cette réponse : b = bonne, m = mauvaise, Entrée = passer : ",
        "rate_keys": {"b": "good", "m": "bad"},
        "wanted": "La réponse que vous attendiez (Entrée pour passer) : ",
        "thanks": "Merci : votre avis est enregistré.",
        "bye": "Au revoir.",
    },
}


def interface_language() -> str:
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if os.environ.get(variable):
            return "fr" if os.environ[variable].lower().startswith("fr") else "en"
    return "en"
