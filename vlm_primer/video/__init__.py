"""Video-language models (chapter 08, survey §5): LLaVA-style models that read clips of frames."""

from vlm_primer.video.llava_next_video import LlavaNextVideo, LlavaNextVideoConfig
from vlm_primer.video.video_llava import VideoInputs, VideoLlava, VideoLlavaConfig

__all__ = ["LlavaNextVideo", "LlavaNextVideoConfig", "VideoInputs", "VideoLlava", "VideoLlavaConfig"]
