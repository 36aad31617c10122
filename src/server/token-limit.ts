import { type DocumentNode, type ParseOptions, type Source, TokenKind } from 'graphql';
import { Parser } from 'graphql/language/parser.js';
import { limitError } from './errors.js';

/**
 * Brackets (`{`, `(`, `[`) a document may hold open at once. graphql-js parses recursively, so a
 * document nested a few thousand levels deep overflows the stack long before any other limit
 * applies; this refuses it while lexing, far below that point and far above any real operation
 * (the depth limit proper, FLOTILLA_MAX_QUERY_DEPTH, is checked after parsing).
 */
export const MAX_DOCUMENT_NESTING = 128;

const OPENING = new Set<string>([TokenKind.BRACE_L, TokenKind.PAREN_L, TokenKind.BRACKET_L]);
const CLOSING = new Set<string>([TokenKind.BRACE_R, TokenKind.PAREN_R, TokenKind.BRACKET_R]);

/**
 * graphql-js's parser, counting tokens as its own `maxTokens` does, but refusing with the coded
 * TOO_MANY_TOKENS error itself (graphql-js reports the cap as an uncoded syntax error), and
 * refusing documents nested deeper than MAX_DOCUMENT_NESTING with QUERY_TOO_DEEP.
 */
class TokenLimitedParser extends Parser {
  private nesting = 0;

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
    const kind: string = this._lexer.token.kind;
    if (OPENING.has(kind) && ++this.nesting > MAX_DOCUMENT_NESTING) {
      throw limitError('QUERY_TOO_DEEP', `the document nests more than ${MAX_DOCUMENT_NESTING} brackets deep`, 400);
    }
    if (CLOSING.has(kind)) this.nesting -= 1;
  }
}

/** `parse` with a cap on the number of tokens and on nesting, checked while lexing so a hostile document costs little. */
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
