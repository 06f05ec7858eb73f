export * from '../../support/tmp.js';
