//! Protocol over real UDP sockets.
