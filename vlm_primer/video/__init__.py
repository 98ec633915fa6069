"""Video-language models (chapter 08, survey §5): early fusion (VideoBERT), frame order (MERLOT, VideoOFA), a video
Q-Former (Video-LLaMA), LLaVA-style models that read clips of frames (Video-LLaVA, LLaVA-NeXT-Video) and token
merging (MiniGPT4-Video)."""

from vlm_primer.video.llava_next_video import LlavaNextVideo, LlavaNextVideoConfig
from vlm_primer.video.merlot import Merlot, MerlotConfig, MerlotOutput, train_merlot
from vlm_primer.video.order import (FramePositionHead, PairwiseOrderHead, order_accuracy, order_loss,
                                    pairwise_order_targets, position_targets, shuffle_frames)
from vlm_primer.video.token_merging import (TokenBudget, TokenMerger, frames_that_fit, merge_tokens, pool_tokens,
                                            token_budget)
from vlm_primer.video.video_llama import VideoLlama, VideoLlamaConfig, VideoLlamaOutput, video_qformer_config
from vlm_primer.video.video_llava import VideoInputs, VideoLlava, VideoLlavaConfig
from vlm_primer.video.videobert import VideoBert, VideoBertConfig, VideoBertOutput, VisualVocabulary
from vlm_primer.video.videoofa import VideoCaptioner, VideoCaptionerConfig, VideoCaptionerOutput

__all__ = ["FramePositionHead", "LlavaNextVideo", "LlavaNextVideoConfig", "Merlot", "MerlotConfig", "MerlotOutput",
           "PairwiseOrderHead", "TokenBudget", "TokenMerger", "VideoBert", "VideoBertConfig", "VideoBertOutput",
           "VideoCaptioner", "VideoCaptionerConfig", "VideoCaptionerOutput", "VideoInputs", "VideoLlama",
           "VideoLlamaConfig", "VideoLlamaOutput", "VideoLlava", "VideoLlavaConfig", "VisualVocabulary",
           "frames_that_fit", "merge_tokens", "order_accuracy", "order_loss", "pairwise_order_targets", "pool_tokens",
           "position_targets", "shuffle_frames", "token_budget", "train_merlot", "video_qformer_config"]
