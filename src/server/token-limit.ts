import type { DocumentNode, ParseOptions, Source } from 'graphql';
import { Parser } from 'graphql/language/parser.js';
import { limitError } from './errors.js';

/**
 * graphql-js's parser, counting tokens as its own `maxTokens` does, but refusing with the coded
 * TOO_MANY_TOKENS error itself: graphql-js reports the cap as an uncoded syntax error.
 */
class TokenLimitedParser extends Parser {
  constructor(
    source: string | Source,
    options: ParseOptions | undefined,
    private readonly maxTokens: number,
  ) {
    super(source, { ...options, maxTokens: undefined });
  }

  override advanceLexer(): void {
    super.advanceLexer();
    if (this.tokenCount > this.maxTokens) {
      throw limitError('TOO_MANY_TOKENS', `the document has more than ${this.maxTokens} tokens`, 400);
    }
  }
}

/** `parse` with a cap on the number of tokens, checked while lexing so a huge document costs little. */
export function parseWithTokenLimit(
  source: string | Source,
  options: ParseOptions | undefined,
  maxTokens: number,
): DocumentNode {
  const parser = new TokenLimitedParser(source, options, maxTokens);
  const document = parser.parseDocument();
  // As graphql's own `parse` does.
  Object.defineProperty(document, 'tokenCount', { enumerable: false, value: parser.tokenCount });
  return document;
}
