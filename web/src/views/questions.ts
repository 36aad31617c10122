import { AnswerQuestionDocument, type FlotillaClient, type MessageFieldsFragment } from '../../../src/client/index.js';
import { h } from '../dom.js';
import { explainError } from '../format.js';

type QuestionOfMessage = NonNullable<MessageFieldsFragment['question']>;

/** What an answered or cancelled question shows in place of its form. */
function outcome(question: { status: string; answerChoice?: string | null; answerText?: string | null }): HTMLElement {
  const said = question.answerChoice ?? question.answerText;
  return h(
    'p',
    { class: 'question-outcome', 'data-outcome': question.status },
    question.status === 'ANSWERED' ? `answered: ${said ?? ''}` : question.status.toLowerCase(),
  );
}

/**
 * The part of a QUESTION message that answers it: while open, a form with one button per option
 * and, when the agent allows free text, a text box; once answered (here, elsewhere or by another
 * person first) or cancelled, what became of it. `answered` swaps it for the outcome.
 */
export function questionPart(api: FlotillaClient, question: QuestionOfMessage): HTMLElement {
  const holder = h('div', { class: 'question', 'data-question': question.id });
  if (question.status !== 'OPEN') {
    holder.append(outcome(question));
    return holder;
  }
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const send = async (answer: { choice: string } | { text: string }) => {
    error.hidden = true;
    for (const button of holder.querySelectorAll('button')) button.disabled = true;
    const result = await api.mutate(AnswerQuestionDocument, { input: { questionId: question.id, ...answer } });
    const answered = result.ok ? result.data.answerQuestion : null;
    if (answered?.__typename === 'QuestionPayload') {
      holder.replaceChildren(outcome(answered.question));
      return;
    }
    if (answered?.__typename === 'QuestionClosedError') {
      // Someone else was first (or the sandbox stopped): the thread shows their answer when it arrives.
      holder.replaceChildren(outcome({ status: answered.status }));
      return;
    }
    error.textContent = result.ok ? explainError(answered as Parameters<typeof explainError>[0]) : result.error.message;
    error.hidden = false;
    for (const button of holder.querySelectorAll('button')) button.disabled = false;
  };
  const text = h('input', {
    type: 'text',
    name: 'answer',
    id: `answer-${question.id}`,
    placeholder: 'Or answer in words…',
    required: true,
  });
  const form = h(
    'form',
    {
      class: 'question-form',
      'aria-label': 'Answer the question',
      onsubmit: (e: Event) => {
        e.preventDefault();
        if (text.value.trim()) void send({ text: text.value });
      },
    },
    h(
      'div',
      { class: 'question-options' },
      question.options.map((choice) =>
        h('button', { type: 'button', class: 'option', onclick: () => void send({ choice }) }, choice),
      ),
    ),
    question.allowFreeText
      ? h(
          'div',
          { class: 'question-text' },
          h('label', { for: `answer-${question.id}`, class: 'visually-hidden' }, 'Your answer'),
          text,
          h('button', { type: 'submit', class: 'primary' }, 'Answer'),
        )
      : null,
  );
  holder.append(form, error);
  return holder;
}

/** An ANSWER message arrived: the question it answers shows the answer instead of its form. */
export function showAnswered(thread: HTMLElement, answer: MessageFieldsFragment): void {
  const question = answer.question;
  if (!question) return;
  for (const holder of thread.querySelectorAll<HTMLElement>('.question[data-question]'))
    if (holder.dataset.question === question.id) holder.replaceChildren(outcome(question));
}
